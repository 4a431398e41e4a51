//! `kiln-node-agent`: the test cluster's node (see the library docs).

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln_node_agent::{Agent, Api, Config, KubeletEndpoint};
use kiln_rootfs::sandbox::{Sandbox, SandboxConfig};

/// Registers a Node with the API server and runs the pods bound to it in
/// kiln's sandbox.
#[derive(Parser)]
#[command(name = "kiln-node-agent")]
struct Args {
    /// Kubeconfig with the API server, its CA and a bearer token.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Image cache, container scratch space and container logs.
    #[arg(long)]
    state_dir: PathBuf,
    /// The Node's name.
    #[arg(long, default_value = "kiln-node")]
    node_name: String,
    /// Allocatable CPU.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Allocatable memory.
    #[arg(long, default_value = "8Gi")]
    memory: String,
    /// Allocatable pods.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Allocatable `nvidia.com/gpu`.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// The kubelet endpoint's port on 127.0.0.1 (container logs for the API
    /// server's log proxy); 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// The kubelet endpoint's certificate (PEM); without it and
    /// --tls-private-key-file, no endpoint is served.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The kubelet endpoint's private key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// Exit when standard input closes: a test harness holds the pipe, so
    /// the agent (and its containers) end with the test process.
    #[arg(long)]
    exit_on_stdin_eof: bool,
    /// A CA certificate (PEM) trusted for registries, beside the system's
    /// (repeatable): how a node's container runtime is told about a
    /// registry with a private CA.
    #[arg(long = "registry-ca", value_name = "PATH")]
    registry_ca: Vec<PathBuf>,
}

fn main() -> ExitCode {
    // First: this process may be started as the sandbox's init.
    kiln_rootfs::sandbox::run_init_if_requested();
    let args = Args::parse();
    // Containers run as root of a user namespace mapped to the user's
    // subordinate ids, as `kiln run` does; without it the sandbox's own
    // preflight explains what is missing.
    let _ = kiln_rootfs::sandbox::reexec_in_user_namespace();
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            eprintln!("kiln-node-agent: standard input closed, exiting");
            std::process::exit(0);
        });
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-node-agent: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let api = Api::from_kubeconfig(&args.kubeconfig)?;
    // A pod's containers run as the node's root, as a kubelet with runc
    // starts them: images and volumes expect uid 0 to be host uid 0 here.
    let sandbox = Sandbox::new(SandboxConfig {
        host_root: true,
        ..SandboxConfig::default()
    })?;
    let config = Config {
        node: args.node_name,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        gpus: args.gpus,
        state_dir: args.state_dir,
        kubelet: args
            .tls_cert_file
            .zip(args.tls_private_key_file)
            .map(|(cert, key)| KubeletEndpoint {
                port: args.kubelet_port,
                cert,
                key,
            }),
        registry_cas: args.registry_ca,
    };
    let agent = Agent::new(api, config, sandbox)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(agent.run())?;
    Ok(())
}

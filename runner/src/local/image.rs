//! How a step starts in an image made ready by [`kiln_builder::ready`]:
//! the step's command over the image's config.

use kiln_builder::ready::ReadyImage;
use kiln_pipeline::{Command, Pipeline};
use kiln_rootfs::sandbox::User;

use super::backend::StepLaunch;

/// How `step` starts in `image`: its command (which, as a Kubernetes
/// container's `command`, replaces the image's entrypoint) and arguments,
/// the image's env overlaid by the step's, the image's user and workdir.
pub fn launch_of(
    pipeline: &Pipeline,
    step: &str,
    image: &ReadyImage,
) -> Result<StepLaunch, String> {
    let s = pipeline.step(step).map_err(|e| e.to_string())?;
    let mut argv = match &s.command.value {
        Command::Exec(v) => v.clone(),
        Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
    };
    argv.extend(s.args.iter().cloned());
    let mut env = image.env.clone();
    for (k, v) in &s.environment {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    // An image without `User` runs as root, as in every OCI runtime.
    let user = if image.user.is_empty() {
        User::ROOT
    } else {
        User::resolve_in_root(&image.rootfs, &image.user)
            .map_err(|e| format!("image user {:?}: {e}", image.user))?
    };
    Ok(StepLaunch {
        rootfs: image.rootfs.clone(),
        argv,
        env,
        user,
        workdir: image.workdir.clone(),
    })
}

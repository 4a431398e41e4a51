//! The build plan: which distinct images a pipeline needs, which steps each
//! serves, and the layers each is made of, in ZenML's fixed order.
//!
//! Pure: takes the validated pipeline, returns plain data. Reading files,
//! hashing and talking to registries happen later, in `build`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_pipeline::{
    ImageSettings, Installer, Pipeline, PipelineError, ReplicateLocal, Requirements,
};
use serde::Serialize;

/// Everything `kiln build` will produce for a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildPlan {
    /// The pipeline's name.
    pub pipeline: String,
    /// Distinct images, in the order of the first step each serves.
    pub images: Vec<ImagePlan>,
}

/// One image: the steps that run in it and how it is made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImagePlan {
    /// Short name, unique within the pipeline: `pipeline` for the image of
    /// the steps without their own image settings, else the first step's name.
    pub name: String,
    /// Steps that run in this image, in topological order.
    pub steps: Vec<String>,
    /// The effective image settings shared by those steps.
    pub settings: ImageSettings,
    /// The parent image reference as written.
    pub parent: String,
    /// Repository to push to, when configured.
    pub repository: Option<String>,
    /// Tag to push: `image_tag`, else `<pipeline>-<name>` (ZenML's scheme).
    pub tag: String,
    /// `skip_build`: the parent image is used as is.
    pub skip_build: bool,
    /// Layers on top of the parent, in order.
    pub layers: Vec<LayerSlot>,
}

/// A layer kiln adds on top of the parent image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerSlot {
    /// Debian packages, one layer.
    Apt {
        /// Package names, sorted and deduplicated.
        packages: Vec<String>,
    },
    /// uv itself, when `python_package_installer: uv`.
    InstallUv,
    /// One Python requirement group.
    Requirements {
        /// Which group.
        group: RequirementGroup,
        /// Where its requirements come from.
        source: RequirementSource,
        /// pip or uv.
        installer: Installer,
        /// Extra installer arguments, as `--key value`.
        installer_args: BTreeMap<String, String>,
    },
    /// The code, copied straight from the build context.
    Code {
        /// Build context, relative to the pipeline file's directory.
        source_root: PathBuf,
        /// An explicit .dockerignore file; else `<source_root>/.dockerignore`.
        dockerignore: Option<PathBuf>,
        /// Where the code lands in the image.
        workdir: String,
    },
    /// Creates the configured user and gives it the workdir.
    User {
        /// User name (or uid).
        name: String,
        /// The workdir to hand over.
        workdir: String,
    },
}

impl LayerSlot {
    /// A short, stable name used in progress lines and `--explain`.
    pub fn label(&self) -> String {
        match self {
            LayerSlot::Apt { .. } => "apt packages".into(),
            LayerSlot::InstallUv => "uv".into(),
            LayerSlot::Requirements { group, .. } => format!("requirements ({})", group.as_str()),
            LayerSlot::Code { .. } => "code".into(),
            LayerSlot::User { name, .. } => format!("user {name}"),
        }
    }

    /// Whether this layer runs commands inside the image (needs the sandbox
    /// and the parent's filesystem).
    pub fn runs_commands(&self) -> bool {
        !matches!(self, LayerSlot::Code { .. })
    }
}

/// Python requirement groups, in ZenML's installation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequirementGroup {
    /// `replicate_local_python_environment`.
    LocalEnvironment,
    /// `stack_requirements`.
    Stack,
    /// `extra_requirements_files`.
    ExtraFiles,
    /// `required_integrations`.
    Integrations,
    /// `pyproject_path`.
    Pyproject,
    /// `requirements`.
    User,
}

impl RequirementGroup {
    /// The group's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RequirementGroup::LocalEnvironment => "local environment",
            RequirementGroup::Stack => "stack",
            RequirementGroup::ExtraFiles => "extra files",
            RequirementGroup::Integrations => "integrations",
            RequirementGroup::Pyproject => "pyproject",
            RequirementGroup::User => "user",
        }
    }
}

/// Where a requirement group's specifiers come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "from", content = "value", rename_all = "snake_case")]
pub enum RequirementSource {
    /// Requirement files, relative to the pipeline file's directory.
    Files(Vec<PathBuf>),
    /// Inline specifiers.
    List(Vec<String>),
    /// A command run on this machine whose output is a requirements file.
    Command(Vec<String>),
    /// A pyproject.toml exported by a command run in its directory.
    Pyproject {
        /// The pyproject.toml, relative to the pipeline file's directory.
        path: PathBuf,
        /// The export command.
        command: Vec<String>,
    },
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerPlanError {
    /// A step name the pipeline lacks.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Two images would be pushed under the same reference.
    #[error(
        "images {first:?} and {second:?} would both be pushed as {reference}; give one of them its own image_tag"
    )]
    TagClash {
        /// One image.
        first: String,
        /// The other.
        second: String,
        /// The clashing reference.
        reference: String,
    },
}

/// Plans the images of `pipeline`; with `only_step`, just the image that step
/// runs in.
pub fn plan(pipeline: &Pipeline, only_step: Option<&str>) -> Result<BuildPlan, LayerPlanError> {
    if let Some(step) = only_step {
        pipeline.step(step)?;
    }
    // Group steps by their effective image settings, compared by value (the
    // serialized form drops source positions).
    let mut groups: Vec<(serde_json::Value, ImageSettings, Vec<String>, bool)> = Vec::new();
    for step in pipeline.ordered_steps() {
        let name = step.name.value.clone();
        let settings = pipeline.effective(&name)?.docker;
        let key = serde_json::to_value(&settings).unwrap_or_default();
        let own = step.settings.docker.is_some();
        match groups.iter_mut().find(|(k, ..)| *k == key) {
            Some((_, _, steps, shared)) => {
                steps.push(name);
                *shared |= !own;
            }
            None => groups.push((key, settings, vec![name], !own)),
        }
    }
    let mut images = Vec::new();
    for (_, settings, steps, shared) in groups {
        if only_step.is_some_and(|s| !steps.iter().any(|n| n == s)) {
            continue;
        }
        let name = if shared {
            "pipeline".to_string()
        } else {
            steps[0].clone()
        };
        images.push(image_plan(pipeline, name, steps, settings));
    }
    check_tags(&images)?;
    Ok(BuildPlan {
        pipeline: pipeline.name().to_string(),
        images,
    })
}

fn image_plan(
    pipeline: &Pipeline,
    name: String,
    steps: Vec<String>,
    s: ImageSettings,
) -> ImagePlan {
    let tag = s.image_tag.as_ref().map_or_else(
        || format!("{}-{name}", pipeline.name()),
        |t| t.value.clone(),
    );
    let skip_build = s.skip_build == Some(true);
    let layers = if skip_build { Vec::new() } else { layers(&s) };
    ImagePlan {
        name,
        steps,
        parent: s
            .parent_image
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or_default(),
        repository: s.target_repository.as_ref().map(|r| r.value.clone()),
        tag,
        skip_build,
        layers,
        settings: s,
    }
}

/// The layer slots of one image, in ZenML's order.
fn layers(s: &ImageSettings) -> Vec<LayerSlot> {
    let mut out = Vec::new();
    let packages = apt_packages(s);
    if !packages.is_empty() {
        out.push(LayerSlot::Apt { packages });
    }
    let installer = s.python_package_installer.unwrap_or(Installer::Pip);
    let installer_args = s.python_package_installer_args.clone().unwrap_or_default();
    let groups = requirement_groups(s);
    if installer == Installer::Uv && !groups.is_empty() {
        out.push(LayerSlot::InstallUv);
    }
    for (group, source) in groups {
        out.push(LayerSlot::Requirements {
            group,
            source,
            installer,
            installer_args: installer_args.clone(),
        });
    }
    let workdir = s
        .workdir
        .as_ref()
        .map_or_else(|| "/app".to_string(), |w| w.value.clone());
    // The user comes before the code, so the code layer can be owned by it
    // without a chown layer that would copy every file again.
    if let Some(user) = s
        .user
        .as_ref()
        .map(|u| &u.value)
        .filter(|u| !u.is_empty() && *u != "root" && *u != "0")
    {
        out.push(LayerSlot::User {
            name: user.clone(),
            workdir: workdir.clone(),
        });
    }
    if s.allow_including_files_in_images != Some(false) {
        out.push(LayerSlot::Code {
            source_root: PathBuf::from(s.source_root.as_ref().map_or(".", |r| r.value.as_str())),
            dockerignore: s.dockerignore.as_ref().map(|d| PathBuf::from(&d.value)),
            workdir,
        });
    }
    out
}

/// The apt layer's packages, sorted and deduplicated so the same set in
/// another order makes the same layer.
fn apt_packages(s: &ImageSettings) -> Vec<String> {
    let mut packages: Vec<String> = s
        .apt_packages
        .iter()
        .flatten()
        .map(|p| p.value.clone())
        .collect();
    packages.sort();
    packages.dedup();
    packages
}

/// The Python requirement groups the settings ask for, in ZenML's
/// installation order; one layer each.
fn requirement_groups(s: &ImageSettings) -> Vec<(RequirementGroup, RequirementSource)> {
    let mut groups = Vec::new();
    if let Some(command) = local_environment(s) {
        groups.push((
            RequirementGroup::LocalEnvironment,
            RequirementSource::Command(command),
        ));
    }
    if s.install_stack_requirements != Some(false)
        && let Some(reqs) = s.stack_requirements.as_ref().filter(|r| !r.is_empty())
    {
        groups.push((
            RequirementGroup::Stack,
            RequirementSource::List(reqs.clone()),
        ));
    }
    if let Some(files) = s
        .extra_requirements_files
        .as_ref()
        .filter(|f| !f.is_empty())
    {
        groups.push((
            RequirementGroup::ExtraFiles,
            RequirementSource::Files(files.iter().map(|f| PathBuf::from(&f.value)).collect()),
        ));
    }
    if let Some(integrations) = s.required_integrations.as_ref().filter(|i| !i.is_empty()) {
        groups.push((
            RequirementGroup::Integrations,
            RequirementSource::List(integrations.clone()),
        ));
    }
    if let Some(pyproject) = &s.pyproject_path {
        let command = s.pyproject_export_command.clone().unwrap_or_else(|| {
            [
                "poetry",
                "export",
                "--format=requirements.txt",
                "--without-hashes",
            ]
            .map(String::from)
            .to_vec()
        });
        groups.push((
            RequirementGroup::Pyproject,
            RequirementSource::Pyproject {
                path: PathBuf::from(&pyproject.value),
                command,
            },
        ));
    }
    match s.requirements.as_ref().map(|r| &r.value) {
        Some(Requirements::File(f)) => groups.push((
            RequirementGroup::User,
            RequirementSource::Files(vec![PathBuf::from(f)]),
        )),
        Some(Requirements::List(list)) if !list.is_empty() => {
            groups.push((
                RequirementGroup::User,
                RequirementSource::List(list.clone()),
            ));
        }
        _ => {}
    }
    groups
}

/// The command whose output replicates the local Python environment, as
/// `replicate_local_python_environment` names it; `None` when off or a
/// method kiln does not know.
fn local_environment(s: &ImageSettings) -> Option<Vec<String>> {
    match s
        .replicate_local_python_environment
        .as_ref()
        .map(|r| &r.value)
    {
        Some(ReplicateLocal::Enabled(true)) => Some(vec!["pip".into(), "freeze".into()]),
        Some(ReplicateLocal::Method(m)) if m == "pip_freeze" => {
            Some(vec!["pip".into(), "freeze".into()])
        }
        Some(ReplicateLocal::Method(m)) if m == "poetry_export" => Some(
            ["poetry", "export", "--format=requirements.txt"]
                .map(String::from)
                .to_vec(),
        ),
        Some(ReplicateLocal::Command(cmd)) => Some(cmd.clone()),
        _ => None,
    }
}

fn check_tags(images: &[ImagePlan]) -> Result<(), LayerPlanError> {
    for (i, a) in images.iter().enumerate() {
        for b in &images[i + 1..] {
            if a.repository.is_some() && a.repository == b.repository && a.tag == b.tag {
                return Err(LayerPlanError::TagClash {
                    first: a.name.clone(),
                    second: b.name.clone(),
                    reference: format!("{}:{}", a.repository.as_deref().unwrap_or_default(), a.tag),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(src: &str) -> Pipeline {
        Pipeline::parse(src, "kiln.yaml").unwrap()
    }

    const QUICK: &str = "\
name: qs
settings:
  docker:
    parent_image: 127.0.0.1:5000/base/python:3.11-bookworm
    target_repository: 127.0.0.1:5000/kiln/qs
    requirements: requirements.txt
    apt_packages: [jq, curl, jq]
steps:
  - name: load
    command: [python3, load.py]
  - name: train
    command: [python3, train.py]
    upstream: [load, eval]
    settings:
      docker:
        requirements: [torch==2.0.0]
        user: trainer
  - name: eval
    command: [python3, eval.py]
    upstream: [load]
";

    #[test]
    fn steps_with_equal_settings_share_an_image() {
        let plan = plan(&pipeline(QUICK), None).unwrap();
        assert_eq!(plan.images.len(), 2);
        assert_eq!(plan.images[0].name, "pipeline");
        assert_eq!(plan.images[0].steps, ["load", "eval"]);
        assert_eq!(plan.images[0].tag, "qs-pipeline");
        assert_eq!(plan.images[1].name, "train");
        assert_eq!(plan.images[1].steps, ["train"]);
        assert_eq!(plan.images[1].tag, "qs-train");
    }

    #[test]
    fn only_step_builds_just_its_image() {
        let plan = plan(&pipeline(QUICK), Some("train")).unwrap();
        assert_eq!(plan.images.len(), 1);
        assert_eq!(plan.images[0].steps, ["train"]);
        let err = super::plan(&pipeline(QUICK), Some("trian")).unwrap_err();
        assert!(err.to_string().contains("unknown step \"trian\""));
    }

    #[test]
    fn layers_follow_zenml_order() {
        let plan = plan(&pipeline(QUICK), None).unwrap();
        let labels: Vec<String> = plan.images[1].layers.iter().map(LayerSlot::label).collect();
        assert_eq!(
            labels,
            [
                "apt packages",
                "requirements (user)",
                "user trainer",
                "code"
            ]
        );
        let LayerSlot::Apt { packages } = &plan.images[0].layers[0] else {
            panic!()
        };
        assert_eq!(packages, &["curl", "jq"]);
    }

    #[test]
    fn every_requirement_group_in_order() {
        let p = pipeline(
            "name: x\nsettings:\n  docker:\n    python_package_installer: uv\n    replicate_local_python_environment: pip_freeze\n    stack_requirements: [s3fs]\n    extra_requirements_files: [extra.txt]\n    required_integrations: [sklearn]\n    pyproject_path: pyproject.toml\n    requirements: [six]\nsteps:\n  - name: a\n    command: [true]\n",
        );
        let plan = plan(&p, None).unwrap();
        let labels: Vec<String> = plan.images[0].layers.iter().map(LayerSlot::label).collect();
        assert_eq!(
            labels,
            [
                "uv",
                "requirements (local environment)",
                "requirements (stack)",
                "requirements (extra files)",
                "requirements (integrations)",
                "requirements (pyproject)",
                "requirements (user)",
                "code"
            ]
        );
    }

    #[test]
    fn skip_build_has_no_layers_and_code_can_be_left_out() {
        let p = pipeline(
            "name: x\nsettings:\n  docker:\n    skip_build: true\nsteps:\n  - name: a\n    command: [true]\n  - name: b\n    command: [true]\n    settings:\n      docker:\n        allow_including_files_in_images: false\n        skip_build: false\n",
        );
        let plan = plan(&p, None).unwrap();
        assert!(plan.images[0].skip_build && plan.images[0].layers.is_empty());
        assert!(!plan.images[1].skip_build && plan.images[1].layers.is_empty());
    }

    #[test]
    fn same_tag_for_two_images_is_an_error() {
        let p = pipeline(
            "name: x\nsettings:\n  docker:\n    target_repository: r.example/x\n    image_tag: v1\nsteps:\n  - name: a\n    command: [true]\n  - name: b\n    command: [true]\n    settings:\n      docker:\n        apt_packages: [jq]\n",
        );
        let err = plan(&p, None).unwrap_err().to_string();
        assert!(err.contains("r.example/x:v1"), "{err}");
    }
}

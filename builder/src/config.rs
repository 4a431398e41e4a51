//! Typed access to an image config, which kiln keeps as JSON.
//!
//! A child image must carry every field of its parent's config, Docker's
//! `Healthcheck`, `OnBuild` and `Shell` and vendor fields included, and
//! oci-spec's config type drops what the OCI spec does not name (the
//! `kiln_oci` spec module shows it). So the config stays a
//! `serde_json::Value`, and this is the one place that knows its field
//! names and types: [`ConfigView`] reads, [`ConfigEdit`] writes. A field
//! that is missing or of another type reads as unset, as Docker reads it.

use serde_json::{Value, json};

/// A JSON array of strings, as image configs and pod specs hold them
/// (`Env`, `Cmd`, `rootfs.diff_ids`); anything else is empty, so a config
/// that lacks the field reads as one without entries.
pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads an image config's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfigView<'a>(&'a Value);

impl<'a> ConfigView<'a> {
    /// A view of a whole image config (`architecture`, `config`, `rootfs`…).
    pub(crate) fn new(config: &'a Value) -> Self {
        Self(config)
    }

    /// A field of the run settings (`config.*`).
    fn run(&self, field: &str) -> &'a Value {
        &self.0["config"][field]
    }

    /// `Env`, as `KEY=VALUE` lines.
    pub(crate) fn env(&self) -> Vec<String> {
        strings(self.run("Env"))
    }

    /// `Env` split at the first `=`; a line without one is left out.
    pub(crate) fn env_pairs(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// `WorkingDir`.
    pub(crate) fn working_dir(&self) -> Option<&'a str> {
        self.run("WorkingDir").as_str()
    }

    /// `User`.
    pub(crate) fn user(&self) -> Option<&'a str> {
        self.run("User").as_str()
    }

    /// `Entrypoint`.
    pub(crate) fn entrypoint(&self) -> Vec<String> {
        strings(self.run("Entrypoint"))
    }

    /// `Cmd`.
    pub(crate) fn cmd(&self) -> Vec<String> {
        strings(self.run("Cmd"))
    }

    /// `Shell` (Docker's; empty means `/bin/sh -c`).
    pub(crate) fn shell(&self) -> Vec<String> {
        strings(self.run("Shell"))
    }

    /// `OnBuild` triggers (Docker's).
    pub(crate) fn onbuild(&self) -> Vec<String> {
        strings(self.run("OnBuild"))
    }

    /// `history`, oldest first (entries as the config has them).
    pub(crate) fn history(&self) -> Vec<Value> {
        self.0["history"].as_array().cloned().unwrap_or_default()
    }

    /// `rootfs.diff_ids`, bottom layer first.
    pub(crate) fn diff_ids(&self) -> Vec<String> {
        strings(&self.0["rootfs"]["diff_ids"])
    }
}

/// Edits an image config in place. Making one turns a missing or
/// non-object `config` into `{}`, so every setter has somewhere to write.
///
/// # Panics
///
/// Never on a config that is a JSON object or null; kiln's configs are
/// objects (the parent's is checked when it is read).
#[derive(Debug)]
pub(crate) struct ConfigEdit<'a>(&'a mut Value);

impl<'a> ConfigEdit<'a> {
    /// Starts editing a whole image config.
    pub(crate) fn new(config: &'a mut Value) -> Self {
        if !config["config"].is_object() {
            config["config"] = json!({});
        }
        Self(config)
    }

    /// Reads the config as it stands.
    pub(crate) fn view(&self) -> ConfigView<'_> {
        ConfigView(self.0)
    }

    /// Sets one run setting.
    fn set(&mut self, field: &str, value: Value) {
        self.0["config"][field] = value;
    }

    /// Sets one entry of an object-valued run setting (`Labels`,
    /// `ExposedPorts`, `Volumes`), creating the object when needed.
    fn set_entry(&mut self, field: &str, key: &str, value: Value) {
        let run = &mut self.0["config"];
        if !run[field].is_object() {
            run[field] = json!({});
        }
        run[field][key] = value;
    }

    /// `Env`, replaced as a whole.
    pub(crate) fn set_env(&mut self, env: Vec<String>) {
        self.set("Env", json!(env));
    }

    /// `WorkingDir`.
    pub(crate) fn set_working_dir(&mut self, dir: String) {
        self.set("WorkingDir", Value::String(dir));
    }

    /// `User`.
    pub(crate) fn set_user(&mut self, user: String) {
        self.set("User", Value::String(user));
    }

    /// `Cmd`; `None` clears it (written as `null`, as Docker does when an
    /// ENTRYPOINT resets it).
    pub(crate) fn set_cmd(&mut self, cmd: Option<Vec<String>>) {
        self.set("Cmd", cmd.map_or(Value::Null, |c| json!(c)));
    }

    /// `Entrypoint`.
    pub(crate) fn set_entrypoint(&mut self, entrypoint: Vec<String>) {
        self.set("Entrypoint", json!(entrypoint));
    }

    /// `Shell`.
    pub(crate) fn set_shell(&mut self, shell: Vec<String>) {
        self.set("Shell", json!(shell));
    }

    /// `StopSignal`.
    pub(crate) fn set_stop_signal(&mut self, signal: String) {
        self.set("StopSignal", Value::String(signal));
    }

    /// `Healthcheck`, in Docker's shape (`Test`, durations in ns, `Retries`).
    pub(crate) fn set_healthcheck(&mut self, healthcheck: Value) {
        self.set("Healthcheck", healthcheck);
    }

    /// `OnBuild`, replaced as a whole.
    pub(crate) fn set_onbuild(&mut self, triggers: Vec<String>) {
        self.set("OnBuild", json!(triggers));
    }

    /// One label, added or replaced.
    pub(crate) fn set_label(&mut self, key: &str, value: String) {
        self.set_entry("Labels", key, Value::String(value));
    }

    /// One exposed port (`80/tcp`).
    pub(crate) fn expose(&mut self, port: &str) {
        self.set_entry("ExposedPorts", port, json!({}));
    }

    /// One volume path.
    pub(crate) fn add_volume(&mut self, path: &str) {
        self.set_entry("Volumes", path, json!({}));
    }

    /// The image's `author`.
    pub(crate) fn set_author(&mut self, author: String) {
        self.0["author"] = Value::String(author);
    }

    /// Appends a layer's diffID to `rootfs.diff_ids`, making `rootfs` when
    /// the config has none.
    pub(crate) fn push_diff_id(&mut self, diff_id: String) {
        if let Some(ids) = self.0["rootfs"]["diff_ids"].as_array_mut() {
            ids.push(Value::String(diff_id));
        } else {
            self.0["rootfs"] = json!({"type": "layers", "diff_ids": [diff_id]});
        }
    }

    /// `rootfs` says `layers` with these diffIDs; its other fields stay.
    pub(crate) fn set_diff_ids(&mut self, diff_ids: Vec<String>) {
        if !self.0["rootfs"].is_object() {
            self.0["rootfs"] = json!({});
        }
        self.0["rootfs"]["type"] = json!("layers");
        self.0["rootfs"]["diff_ids"] = json!(diff_ids);
    }

    /// `history`, replaced as a whole.
    pub(crate) fn set_history(&mut self, history: Vec<Value>) {
        self.0["history"] = Value::Array(history);
    }

    /// The image's `created` time (RFC 3339).
    pub(crate) fn set_created(&mut self, created: String) {
        self.0["created"] = Value::String(created);
    }

    /// Appends a `history` entry.
    pub(crate) fn push_history(&mut self, entry: Value) {
        match self.0["history"].as_array_mut() {
            Some(h) => h.push(entry),
            None => self.0["history"] = json!([entry]),
        }
    }
}

/// Drops `config.OnBuild`: a stage that ran its base's triggers does not
/// pass them on (as in Docker). A config without run settings is left as
/// it is.
pub(crate) fn strip_onbuild(config: &mut Value) {
    if let Some(run) = config["config"].as_object_mut() {
        run.remove("OnBuild");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_mistyped_fields_read_as_unset() {
        let config = json!({"config": {"User": 7, "Env": "PATH=/bin"}});
        let view = ConfigView::new(&config);
        assert_eq!(view.user(), None);
        assert!(view.env().is_empty());
        assert_eq!(view.working_dir(), None);
        assert!(view.diff_ids().is_empty());
        assert!(ConfigView::new(&json!(null)).cmd().is_empty());
    }

    #[test]
    fn edits_write_docker_field_names_and_keep_the_rest() {
        let mut config = json!({
            "architecture": "amd64",
            "config": {"Healthcheck": {"Test": ["NONE"]}, "Env": ["A=1"]},
        });
        let mut edit = ConfigEdit::new(&mut config);
        edit.set_env(vec!["A=2".into(), "B=x=y".into()]);
        edit.set_working_dir("/app".into());
        edit.set_label("k", "v".into());
        edit.expose("80/tcp");
        edit.add_volume("/data");
        edit.set_cmd(None);
        edit.push_diff_id("sha256:1".into());
        edit.push_history(json!({"created_by": "x"}));
        assert_eq!(
            edit.view().env_pairs(),
            [("A".into(), "2".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(config["config"]["Healthcheck"]["Test"][0], "NONE");
        assert_eq!(config["config"]["WorkingDir"], "/app");
        assert_eq!(config["config"]["Labels"]["k"], "v");
        assert_eq!(config["config"]["ExposedPorts"]["80/tcp"], json!({}));
        assert_eq!(config["config"]["Volumes"]["/data"], json!({}));
        assert_eq!(config["config"]["Cmd"], Value::Null);
        assert_eq!(
            config["rootfs"],
            json!({"type": "layers", "diff_ids": ["sha256:1"]})
        );
        assert_eq!(config["history"], json!([{"created_by": "x"}]));
        assert_eq!(config["architecture"], "amd64");
    }

    #[test]
    fn a_config_without_run_settings_gets_an_object() {
        let mut config = json!({"config": null});
        ConfigEdit::new(&mut config).set_user("u".into());
        assert_eq!(config["config"], json!({"User": "u"}));
        let mut bare = json!({"os": "linux"});
        strip_onbuild(&mut bare);
        let mut with = json!({"config": {"OnBuild": ["RUN x"], "User": "u"}});
        strip_onbuild(&mut with);
        assert_eq!(with["config"], json!({"User": "u"}));
    }
}

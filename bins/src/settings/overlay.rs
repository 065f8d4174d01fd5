//! The one overlay every relay's settings go through: flag > environment variable (both
//! clap's) > the legacy `SMDR_*` names (`smdr-relay` only) > the TOML file > the default
//! (applied where each setting is resolved).
//!
//! Each relay's argument struct is also the shape of its layers: the TOML file is read into
//! the same struct (its keys are the long flags with `_` for `-`), and [`layer`] lays one
//! struct over another, a setting at a time: the upper one's value wins unless it has none
//! (`None`, or no `--sink`).

use std::path::Path;

use clap::CommandFactory;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ConfigError;

/// Lays `upper` over each of `lower` in turn (highest first): every setting `upper` leaves
/// unset is taken from the first lower layer that sets it.
pub fn layer<T: Serialize + DeserializeOwned>(upper: &T, lower: &[&T]) -> Result<T, ConfigError> {
    let json = |t: &T| serde_json::to_value(t).map_err(|e| ConfigError(format!("settings: {e}")));
    let mut top = json(upper)?;
    for l in lower {
        fill(&mut top, json(l)?);
    }
    serde_json::from_value(top).map_err(|e| ConfigError(format!("settings: {e}")))
}

/// Fills the unset settings of `top` from `below`.
fn fill(top: &mut Value, below: Value) {
    let (Value::Object(top), Value::Object(below)) = (top, below) else {
        return;
    };
    for (key, value) in below {
        match top.get_mut(&key) {
            None => {
                top.insert(key, value);
            }
            Some(t) if is_unset(&key, t) => *t = value,
            Some(t @ Value::Object(_)) => fill(t, value),
            Some(_) => {}
        }
    }
}

/// Unset: no value, or no sinks (`--sink` is a repeated flag: none given is an empty list; an
/// empty list of anything else was given, as an empty value).
fn is_unset(key: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => key == "sinks" && a.is_empty(),
        _ => false,
    }
}

/// The settings a file may hold: every long flag of the five relays (one file may serve
/// several), and `tenant_rules`; not `config`, `check_config`, `replay`, `once` or the
/// operator's commands (`requeue_dead`, `pause_sink`, `resume_sink`), which say what this run
/// does.
fn file_keys() -> Vec<String> {
    let mut keys = vec!["tenant_rules".to_owned()];
    for cmd in [
        super::Args::command(),
        super::AmiArgs::command(),
        super::ListArgs::command(),
        super::ReceiverArgs::command(),
        super::NatsRelayArgs::command(),
    ] {
        keys.extend(
            cmd.get_arguments()
                .filter(|a| a.get_long().is_some())
                .map(|a| a.get_id().as_str().to_owned())
                .filter(|id| {
                    !matches!(
                        id.as_str(),
                        "config"
                            | "check_config"
                            | "replay"
                            | "once"
                            | "help"
                            | "version"
                            | "requeue_dead"
                            | "pause_sink"
                            | "resume_sink"
                    )
                }),
        );
    }
    keys
}

/// The TOML file at `path` as the layer `T` (the relay's argument struct); an unknown key is
/// an error naming it.
pub fn read_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let bad = |e: &dyn std::fmt::Display| ConfigError(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(&e))?;
    let known = file_keys();
    if let Some(key) = table.keys().find(|k| !known.contains(k)) {
        return Err(bad(&format!("unknown setting `{key}`")));
    }
    toml::from_str(&text).map_err(|e| bad(&e))
}

/// A text setting, empty counting as unset.
pub fn text(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SinkSpec;
    use crate::settings::sinks::SinkArgs;
    use crate::settings::values::List;
    use crate::settings::{AmiArgs, Args, CommonArgs};

    fn smdr(common: CommonArgs, read_timeout: Option<u64>) -> Args {
        Args {
            common,
            read_timeout,
            ..Args::default()
        }
    }

    #[test]
    fn flags_and_env_over_legacy_names_over_the_file_setting_by_setting() {
        let flags = smdr(
            CommonArgs {
                site: Some("flag".into()),
                ..CommonArgs::default()
            },
            None,
        );
        let legacy = smdr(
            CommonArgs {
                site: Some("legacy".into()),
                sink: SinkArgs {
                    webhook_url: Some("http://legacy.example/".into()),
                    ..SinkArgs::default()
                },
                ..CommonArgs::default()
            },
            None,
        );
        let file = smdr(
            CommonArgs {
                site: Some("file".into()),
                idle_timeout: Some(5),
                sink: SinkArgs {
                    webhook_url: Some("http://file.example/".into()),
                    sinks: vec![SinkSpec::Store, SinkSpec::Jsonl(None)],
                    ..SinkArgs::default()
                },
                ..CommonArgs::default()
            },
            Some(9),
        );
        let a = layer(&flags, &[&legacy, &file]).unwrap();
        assert_eq!(a.common.site.as_deref(), Some("flag"));
        assert_eq!(
            a.common.sink.webhook_url.as_deref(),
            Some("http://legacy.example/")
        );
        assert_eq!(a.common.idle_timeout, Some(5));
        assert_eq!(a.read_timeout, Some(9));
        assert_eq!(
            a.common.sink.sinks, file.common.sink.sinks,
            "no --sink: the file's"
        );
        assert_eq!(
            a.common.sink.webhook_max_retries, None,
            "nobody's: the default"
        );

        // A value given empty is given: it hides the file's (and reads as unset later).
        let flags = smdr(
            CommonArgs {
                site: Some(String::new()),
                sink: SinkArgs {
                    sinks: vec![SinkSpec::Store],
                    ..SinkArgs::default()
                },
                ..CommonArgs::default()
            },
            None,
        );
        let a = layer(&flags, &[&file]).unwrap();
        assert_eq!(a.common.site.as_deref(), Some(""));
        assert_eq!(text(&a.common.site), None);
        assert_eq!(a.common.sink.sinks, vec![SinkSpec::Store]);
    }

    #[test]
    fn typed_settings_survive_the_layers() {
        let flags = AmiArgs {
            trunk_contexts: Some(List(Vec::new())),
            ..AmiArgs::default()
        };
        let mut file = AmiArgs {
            trunk_contexts: Some(List(vec!["from-trunk".into()])),
            trunk_channels: Some(List(vec!["PJSIP/provider".into()])),
            ami_tls: Some(true),
            cel_mode: Some(crate::settings::values::CelMode::Db),
            ..AmiArgs::default()
        };
        file.db.db_type = Some(crate::settings::values::DbType::Mysql);
        file.db.db_fresh_start = Some(true);
        let a = layer(&flags, &[&file]).unwrap();
        assert_eq!(
            a.trunk_contexts,
            Some(List(Vec::new())),
            "an empty list given hides the file's"
        );
        assert_eq!(a.trunk_channels, file.trunk_channels);
        assert_eq!((a.ami_tls, a.cel_mode), (file.ami_tls, file.cel_mode));
        assert_eq!(
            (a.db.db_type, a.db.db_fresh_start),
            (file.db.db_type, Some(true))
        );
    }

    #[test]
    fn the_file_reads_every_long_flag_and_names_an_unknown_key() {
        let dir = std::env::temp_dir().join(format!("cdr-relay-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ami.toml");
        std::fs::write(
            &path,
            "db_type = \"MariaDB\"\ntrunk_channels = [\"PJSIP/a\"]\nami_tls = true\nsmdr_addr = \"x:1\"\n\n[[tenant_rules]]\nfield = \"context\"\ntenant = \"t\"\nprefix = \"1\"\n",
        )
        .unwrap();
        let a: AmiArgs = read_file(Some(&path)).unwrap();
        assert_eq!(a.db.db_type, Some(crate::settings::values::DbType::Mysql));
        assert_eq!(a.trunk_channels, Some(List(vec!["PJSIP/a".into()])));
        assert_eq!(a.ami_tls, Some(true));
        assert_eq!(a.tenant_rules.map(|r| r.len()), Some(1));
        for (text, says) in [
            (
                "db_type = \"oracle\"\n",
                "DB_TYPE \"oracle\": expected postgresql or mysql",
            ),
            ("check_config = true\n", "unknown setting `check_config`"),
            ("ami_hots = \"x\"\n", "unknown setting `ami_hots`"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = read_file::<AmiArgs>(Some(&path)).unwrap_err();
            assert!(e.0.contains(says), "{text}: {e}");
        }
        // nats-relay's own keys too.
        std::fs::write(&path, "nats_consumer = \"hub-2\"\nnats_batch = 64\n").unwrap();
        let n: crate::settings::NatsRelayArgs = read_file(Some(&path)).unwrap();
        assert_eq!(
            (n.nats_consumer.as_deref(), n.nats_batch),
            (Some("hub-2"), Some(64))
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

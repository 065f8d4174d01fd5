//! The typed values of settings: each enum-like setting is a clap [`ValueEnum`] (its spellings
//! and aliases, shown in `--help`), read the same way from a flag, a variable and the TOML file,
//! with the error message the relays have always given (`CEL_MODE "x": expected ami, csv or
//! db`); comma-separated lists (`a,b` on the command line, an array in the file); booleans
//! (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::ValueEnum;
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum-like setting: its values ([`ValueEnum`], aliases included, any case, spaces around
/// ignored) and the name its errors give.
pub trait Choice: ValueEnum + Clone + Send + Sync + 'static {
    /// The setting's name in errors (`CEL_MODE`).
    const NAME: &'static str;

    /// Reads a value, or says what was expected.
    fn parse(text: &str) -> Result<Self, String> {
        let v = text.trim();
        Self::from_str(v, true).map_err(|_| {
            let names: Vec<String> = Self::value_variants()
                .iter()
                .filter_map(|c| c.to_possible_value())
                .map(|p| p.get_name().to_owned())
                .collect();
            let expected = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            format!(
                "{} {:?}: expected {expected}",
                Self::NAME,
                v.to_ascii_lowercase()
            )
        })
    }

    /// The value's main spelling.
    fn name(&self) -> String {
        self.to_possible_value()
            .map(|p| p.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// The clap parser of a [`Choice`]: its errors are the setting's own, its possible values are
/// listed in `--help`.
#[derive(Debug)]
pub struct ChoiceParser<T>(PhantomData<T>);

impl<T> ChoiceParser<T> {
    /// The parser.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for ChoiceParser<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for ChoiceParser<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T: Choice> TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        T::parse(&text).map_err(|e| {
            let mut cmd = cmd.clone();
            cmd.error(ErrorKind::InvalidValue, e)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// Declares enum-like settings: the enum (a [`ValueEnum`]), its [`Choice`] name, and serde
/// through the same spellings (the file, and the layers, which are JSON).
macro_rules! choices {
    ($(
        $(#[$meta:meta])*
        $name:ident = $setting:literal {
            $( $(#[$vmeta:meta])* $variant:ident ),+ $(,)?
        }
    )+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl Choice for $name {
            const NAME: &'static str = $setting;
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.name())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )+};
}

choices! {
    /// `CEL_MODE`: where `ami-relay` reads CEL.
    CelMode = "CEL_MODE" {
        /// The Manager Interface.
        Ami,
        /// The cel_custom and cdr_csv files.
        Csv,
        /// The `cel` and `cdr` tables.
        Db,
    }
    /// `AMI_AUTH`: how `ami-relay` logs in.
    AmiAuth = "AMI_AUTH" {
        /// The secret as is.
        Plain,
        /// MD5 challenge-response.
        Md5,
    }
    /// `CALL_SHIPPING_MODE`: one record per call, or progress records too.
    ShippingMode = "CALL_SHIPPING_MODE" {
        /// One record per call when it ends.
        Complete,
        /// Also `started` and `updated` records while it lasts.
        Progressive,
    }
    /// `DB_TYPE`: the database server.
    DbType = "DB_TYPE" {
        /// PostgreSQL.
        #[value(name = "postgresql", alias = "postgres", alias = "pgsql", alias = "pg")]
        Postgresql,
        /// MySQL or MariaDB.
        #[value(alias = "mariadb")]
        Mysql,
    }
    /// `DB_TLS`: TLS to the database.
    DbTlsMode = "DB_TLS" {
        /// Never.
        #[value(alias = "disabled", alias = "off", alias = "false")]
        Disable,
        /// When the server offers it.
        #[value(alias = "preferred")]
        Prefer,
        /// Always, certificate not checked.
        #[value(alias = "required")]
        Require,
        /// Always, certificate and host name checked.
        #[value(alias = "verify-full", alias = "verify_identity")]
        Verify,
    }
    /// `SQL_TLS`: TLS to the SQL sink's database (as `DB_TLS`).
    SqlTlsMode = "SQL_TLS" {
        /// Never.
        #[value(alias = "disabled", alias = "off", alias = "false")]
        Disable,
        /// When the server offers it.
        #[value(alias = "preferred")]
        Prefer,
        /// Always, certificate not checked.
        #[value(alias = "required")]
        Require,
        /// Always, certificate and host name checked.
        #[value(alias = "verify-full", alias = "verify_identity")]
        Verify,
    }
    /// `REDIS_PUSH`: the side the Redis sink pushes to.
    RedisPush = "REDIS_PUSH" {
        /// `LPUSH`.
        #[value(alias = "left")]
        Lpush,
        /// `RPUSH`.
        #[value(alias = "right")]
        Rpush,
    }
    /// `CDR_RELAY_LOG_FORMAT`: the log lines' format.
    LogFormat = "log format" {
        /// Human-readable.
        Text,
        /// One JSON object a line.
        Json,
    }
}

/// A boolean setting as a flag or variable gives it: `true`/`1`/`yes`/`on`, `false`/`0`/`no`/
/// `off` or empty.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{:?}: expected true or false", text.trim())),
    }
}

/// A list setting: comma separated on the command line (empty items dropped), an array in the
/// TOML file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct List(pub Vec<String>);

impl std::str::FromStr for List {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect(),
        ))
    }
}

/// The sinks as strings (`store`, `jsonl:PATH`, ...), as the file writes them.
pub mod sink_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::settings::SinkSpec;

    /// Writes each sink as its spelling.
    pub fn serialize<S: Serializer>(v: &[SinkSpec], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    /// Reads each sink from its spelling.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SinkSpec>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_take_their_aliases_in_any_case_and_say_what_they_expect() {
        assert_eq!(DbType::parse(" PG "), Ok(DbType::Postgresql));
        assert_eq!(DbType::parse("MariaDB"), Ok(DbType::Mysql));
        assert_eq!(DbTlsMode::parse("verify_identity"), Ok(DbTlsMode::Verify));
        assert_eq!(
            DbType::parse("Oracle"),
            Err("DB_TYPE \"oracle\": expected postgresql or mysql".into())
        );
        assert_eq!(
            DbTlsMode::parse("maybe"),
            Err("DB_TLS \"maybe\": expected disable, prefer, require or verify".into())
        );
        assert_eq!(
            CelMode::parse("x"),
            Err("CEL_MODE \"x\": expected ami, csv or db".into())
        );
        assert_eq!(DbType::Postgresql.name(), "postgresql");
        assert_eq!(parse_bool(" Yes"), Ok(true));
        assert_eq!(parse_bool(""), Ok(false));
        assert!(parse_bool("maybe").is_err());
        assert_eq!(
            " a, ,b ".parse::<List>(),
            Ok(List(vec!["a".into(), "b".into()]))
        );
    }
}

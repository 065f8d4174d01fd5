//! Serde helpers: the field shapes of the SMDR webhook body.

pub(crate) mod timestamp {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) const FORMAT: &str = "%Y/%m/%d %H:%M:%S";

    pub(crate) fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.format(FORMAT))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        NaiveDateTime::parse_from_str(&s, FORMAT).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod opt_timestamp {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<NaiveDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::timestamp::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NaiveDateTime>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| {
            NaiveDateTime::parse_from_str(&s, super::timestamp::FORMAT)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

pub(crate) mod direction {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Direction;

    pub(crate) fn serialize<S: Serializer>(d: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match d {
            Direction::Inbound => "I",
            Direction::Outbound => "O",
        })
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        match <std::borrow::Cow<'de, str>>::deserialize(d)?.as_ref() {
            "I" => Ok(Direction::Inbound),
            "O" => Ok(Direction::Outbound),
            other => Err(serde::de::Error::custom(format!(
                "direction {other:?}, expected I or O"
            ))),
        }
    }
}

pub(crate) mod call_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        <std::borrow::Cow<'de, str>>::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub(crate) mod device {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Device;

    /// A device is written as on the wire (`E232`); an empty device as `""`.
    pub(crate) fn serialize<S: Serializer>(d: &Option<Device>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(d),
            None => s.serialize_str(""),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Device>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        Device::parse(s.as_bytes())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("device {s:?}")))
    }
}

/// The JSON Schemas of the shapes above (for `schemars(schema_with = ..)`).
#[cfg(feature = "schemars")]
pub(crate) mod schema {
    use schemars::{Schema, SchemaGenerator, json_schema};

    /// `YYYY/MM/DD HH:MM:SS` (PBX local time), as [`super::timestamp`] writes it.
    pub(crate) fn timestamp(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}$",
            "description": "YYYY/MM/DD HH:MM:SS, the PBX's local time as SMDR writes it",
        })
    }

    /// [`timestamp`] or `null`.
    pub(crate) fn opt_timestamp(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "null"],
            "pattern": r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}$",
            "description": "YYYY/MM/DD HH:MM:SS (UTC, as IP Office writes this field), or null",
        })
    }

    /// `I` or `O`.
    pub(crate) fn direction(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": ["I", "O"] })
    }

    /// The Call ID's digits.
    pub(crate) fn call_id(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": r"^\d+$" })
    }

    /// A device as on the wire (`E232`, `T9001`, `V9502`), or `""` for none.
    pub(crate) fn device(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

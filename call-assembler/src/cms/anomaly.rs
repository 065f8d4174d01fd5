//! Surprises in CMS input.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::{CmsAssembler, CmsAssemblerConfig};
#[cfg(doc)]
use crate::Anomaly;

/// Something surprising in CMS input, reported by [`CmsAssembler::poll_output`] as
/// [`Anomaly::Cms`]; the record concerned was dropped and the input goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CmsAnomaly {
    /// A record whose `recordIndex` its call already holds (a resend), or one identical to a
    /// held record.
    Duplicate {
        /// The call id.
        call_id: CompactString,
        /// The record's type.
        record_type: CompactString,
        /// Its `recordIndex`.
        record_index: Option<u64>,
    },
    /// A record of a call that was already emitted complete.
    Late {
        /// The call id.
        call_id: CompactString,
        /// The record's type.
        record_type: CompactString,
        /// Its `recordIndex`.
        record_index: Option<u64>,
    },
    /// A record that names no call and whose object (leg, recording, stream) was never seen
    /// with one; or a record of an unknown type for a call that is not open.
    Unattached {
        /// The record's type.
        record_type: CompactString,
        /// Its main object's id.
        object_id: CompactString,
        /// Its `recordIndex`.
        record_index: Option<u64>,
    },
    /// A record over [`CmsAssemblerConfig::max_records_per_call`].
    TooManyRecords {
        /// The call id.
        call_id: CompactString,
        /// Its `recordIndex`.
        record_index: Option<u64>,
    },
}

/// How many unread anomalies a [`CmsAssembler`] keeps (see [`CmsAssembler::poll_output`]).
pub const CMS_MAX_QUEUED_ANOMALIES: usize = 1024;

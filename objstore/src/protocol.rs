//! What client and server agree on beyond the `.proto` file: request limits and the status
//! metadata that carries numbers (clients read these, never the status message's wording).

/// Most keys in one List page.
pub const MAX_LIST: usize = 10_000;
/// Most keys in one BatchGet or BatchPut.
pub const MAX_BATCH: usize = 10_000;
/// Metadata of a FAILED_PRECONDITION status: the key's current mod revision (absent when
/// the key does not exist).
pub const CURRENT_REVISION: &str = "objstore-current-revision";
/// Metadata of an OUT_OF_RANGE status ending a watch that fell behind: where to resume.
pub const RESUME_FROM: &str = "objstore-resume-from";

//! Platforms without `/proc`: every listing says it is not supported, every name is unknown.

use super::{ListError, Listing};

const UNSUPPORTED: &str = "not supported on this platform";

pub(crate) fn list(_: Listing, _: &mut Vec<u32>) -> Result<(), ListError> {
    Err(ListError::Unsupported(UNSUPPORTED))
}

pub(crate) fn thread_name(_: u32) -> Option<String> {
    None
}

pub(crate) fn fd_target(_: u32) -> Option<String> {
    None
}

pub(crate) fn children(_: &mut Vec<u32>) -> Result<(), ListError> {
    Err(ListError::Unsupported(UNSUPPORTED))
}

pub(crate) fn child(_: u32) -> Option<(String, char)> {
    None
}

pub(crate) fn main_and_current_tid() -> Option<(u32, u32)> {
    None
}

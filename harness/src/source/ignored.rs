//! Ignore filters for sources whose items have ids and names (threads, fds).
//!
//! Matching a filter needs a name, and reading a name costs far more than counting. The names
//! of the ids alive at a check's first reading are read once and remembered; only ids that
//! appear later are named afresh at each reading (a thread that was just spawned may not have
//! set its name yet).

use std::collections::HashMap;

use crate::filter::Filter;
use crate::source::Reading;
use crate::sys::{self, ListError, Listing};

pub(crate) struct Ignored {
    filter: Filter,
    /// For ids of the first reading: is it ignored? Filled only when a filter is set.
    known: HashMap<u32, bool>,
}

impl Ignored {
    pub(crate) fn new(filter: Filter) -> Self {
        Ignored {
            filter,
            known: HashMap::new(),
        }
    }

    pub(crate) fn matches(&self, label: &str) -> bool {
        self.filter.matches(label)
    }

    /// Remembers which of the first reading's ids are ignored; true if any filter is set (the
    /// first count must then be taken again with what was learned).
    pub(crate) fn learn(&mut self, first: &Reading, label: impl Fn(u32) -> Option<String>) -> bool {
        if self.filter.is_empty() {
            return false;
        }
        for &id in first.ids() {
            let ignored = label(id).is_some_and(|l| self.filter.matches(&l));
            self.known.insert(id, ignored);
        }
        true
    }

    /// Lists `what` and counts the ids no filter ignores.
    pub(crate) fn read(&self, what: Listing, label: impl Fn(u32) -> Option<String>) -> Reading {
        let mut ids = Vec::new();
        match sys::list(what, &mut ids) {
            Ok(()) => {
                let count = ids.len() - self.ignored(&ids, label);
                Reading::Ids { ids, count }
            }
            Err(ListError::Unsupported(why)) => Reading::Unsupported(why),
            Err(ListError::Failed(msg)) => Reading::Failed(msg),
        }
    }

    fn ignored(&self, ids: &[u32], label: impl Fn(u32) -> Option<String>) -> usize {
        if self.filter.is_empty() {
            return 0;
        }
        ids.iter()
            .filter(|id| match self.known.get(id) {
                Some(&ignored) => ignored,
                None => label(**id).is_some_and(|l| self.filter.matches(&l)),
            })
            .count()
    }
}

//! Ignore filters: globs on thread names and fd targets.

use glob::Pattern;

/// A set of globs; an item is ignored when any of them matches its name or target.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    globs: Vec<Pattern>,
}

impl Filter {
    /// Adds a glob; panics with the glob and the reason when it does not parse, because a
    /// builder method has no other way to refuse, and a silently ignored filter would hide a
    /// misconfiguration.
    pub(crate) fn add(&mut self, what: &str, glob: &str) {
        match Pattern::new(glob) {
            Ok(p) => self.globs.push(p),
            Err(e) => panic!("leakcheck: invalid {what} glob {glob:?}: {e}"),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        self.globs.iter().any(|g| g.matches(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_any_glob() {
        let mut f = Filter::default();
        assert!(!f.matches("tokio-runtime-w"));
        f.add("thread-name", "tokio-*");
        f.add("thread-name", "anon_inode:[ie]*");
        assert!(f.matches("tokio-runtime-w"));
        assert!(f.matches("anon_inode:inotify"));
        assert!(!f.matches("anon_inode:[eventpoll]"));
    }

    #[test]
    #[should_panic(expected = "invalid thread-name glob \"[\"")]
    fn bad_glob_is_named() {
        Filter::default().add("thread-name", "[");
    }
}

//! The attribute's arguments: parsed, checked and kept with their spans, so that every mistake
//! is a compile error that names the argument and what it takes.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, Meta, Token};

use crate::{err, Kind};

/// The arguments given to one attribute.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) cycles: Option<u64>,
    pub(crate) warmup: Option<u64>,
    pub(crate) settle_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) ignore_thread: Vec<String>,
    pub(crate) ignore_fd: Vec<String>,
    pub(crate) ignore_created_by: Vec<String>,
    pub(crate) heap: bool,
    pub(crate) strict: bool,
    /// The async test's runtime, as `#[tokio::test]` takes it.
    pub(crate) runtime: RuntimeArgs,
}

/// `#[tokio::test]`'s arguments, each with its span for errors on a sync test.
#[derive(Default)]
pub(crate) struct RuntimeArgs {
    pub(crate) flavor: Option<(Flavor, Span)>,
    pub(crate) worker_threads: Option<(u64, Span)>,
    pub(crate) start_paused: Option<(bool, Span)>,
    /// `crate = "path"`: where tokio is, when the test crate renames it.
    pub(crate) tokio: Option<(syn::Path, Span)>,
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread,
}

impl RuntimeArgs {
    pub(crate) fn flavor(&self) -> Flavor {
        self.flavor.map_or(Flavor::CurrentThread, |(f, _)| f)
    }

    /// The first argument that only an async test takes, for the error on a sync one.
    pub(crate) fn first_given(&self) -> Option<(&'static str, Span)> {
        let given = [
            self.flavor.map(|(_, s)| ("flavor", s)),
            self.worker_threads.map(|(_, s)| ("worker_threads", s)),
            self.start_paused.map(|(_, s)| ("start_paused", s)),
            self.tokio.as_ref().map(|(_, s)| ("crate", *s)),
        ];
        given.into_iter().flatten().next()
    }
}

/// Every argument an attribute takes, in the order its error lists them.
pub(crate) fn allowed(kind: Kind) -> &'static [&'static str] {
    const RUNTIME: [&str; 4] = ["flavor", "worker_threads", "start_paused", "crate"];
    match kind {
        Kind::Checked => &[
            "cycles",
            "warmup",
            "settle_ms",
            "ignore_thread",
            "ignore_fd",
            "ignore_created_by",
            "heap",
            "strict",
            "timeout_ms",
            RUNTIME[0],
            RUNTIME[1],
            RUNTIME[2],
            RUNTIME[3],
        ],
        Kind::Isolated => &["timeout_ms", RUNTIME[0], RUNTIME[1], RUNTIME[2], RUNTIME[3]],
    }
}

/// Parses the attribute's argument list.
pub(crate) fn parse(kind: Kind, tokens: TokenStream2) -> syn::Result<Args> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    let mut args = Args::default();
    for meta in metas {
        let name = name_of(kind, &meta)?;
        if name == "heap" || name == "strict" {
            parse_flag(&mut args, &name, &meta)?;
            continue;
        }
        let Meta::NameValue(nv) = &meta else {
            return err(
                meta.span(),
                format!("`{name}` takes a value: `{name} = ...`"),
            );
        };
        let arg = Arg {
            name: &name,
            meta: &meta,
            value: &nv.value,
        };
        arg.apply(&mut args)?;
    }
    Ok(args)
}

/// The argument's name, if the attribute takes it.
fn name_of(kind: Kind, meta: &Meta) -> syn::Result<String> {
    let path = meta.path();
    let name = match (path.get_ident(), path.segments.first()) {
        (Some(ident), _) => ident.to_string(),
        // `crate` is a keyword: syn reads it as a one-segment path without an ident.
        (None, Some(seg)) if path.segments.len() == 1 => seg.ident.to_string(),
        _ => quote!(#path).to_string(),
    };
    if allowed(kind).contains(&name.as_str()) {
        return Ok(name);
    }
    err(
        path.span(),
        format!(
            "unknown argument `{name}` to {}; allowed: {}",
            kind.attr(),
            allowed(kind).join(", ")
        ),
    )
}

/// `heap` and `strict`: flags, written without a value.
fn parse_flag(args: &mut Args, name: &str, meta: &Meta) -> syn::Result<()> {
    let (slot, what) = match name {
        "heap" => (
            &mut args.heap,
            "it counts live heap blocks; install leakcheck::CountingAlloc as the test crate's \
             #[global_allocator]",
        ),
        _ => (
            &mut args.strict,
            "threads made by a one-time initializer then count as leaks",
        ),
    };
    if !matches!(meta, Meta::Path(_)) {
        return err(
            meta.span(),
            format!("`{name}` is a flag: write `{name}` ({what})"),
        );
    }
    once(*slot, meta, name)?;
    *slot = true;
    Ok(())
}

/// One `name = value` argument.
struct Arg<'a> {
    name: &'a str,
    meta: &'a Meta,
    value: &'a Expr,
}

impl Arg<'_> {
    fn apply(&self, args: &mut Args) -> syn::Result<()> {
        let rt = &mut args.runtime;
        match self.name {
            "cycles" => set(&mut args.cycles, self, |a| {
                a.int(1, 1_000_000, "cycles = 20")
            }),
            "warmup" => set(&mut args.warmup, self, |a| {
                a.int(0, 1_000_000, "warmup = 1")
            }),
            // One hour: a budget longer than that is a typo, not a slow component.
            "settle_ms" => set(&mut args.settle_ms, self, |a| {
                a.int(0, 3_600_000, "settle_ms = 500")
            }),
            "timeout_ms" => set(&mut args.timeout_ms, self, |a| {
                a.int(1, u64::MAX, "timeout_ms = 60000")
            }),
            "ignore_thread" => {
                let glob = self.glob("ignore_thread = \"tokio-rt-worker\"")?;
                args.ignore_thread.push(glob);
                Ok(())
            }
            "ignore_fd" => {
                args.ignore_fd
                    .push(self.glob("ignore_fd = \"/var/log/*\"")?);
                Ok(())
            }
            "ignore_created_by" => {
                let glob = self.glob("ignore_created_by = \"threadpool::*\"")?;
                args.ignore_created_by.push(glob);
                Ok(())
            }
            "flavor" => set(&mut rt.flavor, self, |a| Ok((a.flavor()?, a.span()))),
            "worker_threads" => set(&mut rt.worker_threads, self, |a| {
                Ok((a.int(1, 4096, "worker_threads = 2")?, a.span()))
            }),
            "start_paused" => set(&mut rt.start_paused, self, |a| Ok((a.bool()?, a.span()))),
            "crate" => set(&mut rt.tokio, self, |a| Ok((a.path()?, a.span()))),
            _ => unreachable!("every allowed argument is handled"),
        }
    }

    fn span(&self) -> Span {
        self.value.span()
    }

    /// A whole number in `min..=max`, with an error that names the argument and the range.
    fn int(&self, min: u64, max: u64, example: &str) -> syn::Result<u64> {
        let name = self.name;
        let what = if max == u64::MAX {
            format!("`{name}` takes a whole number of {min} or more, as in `{example}`")
        } else {
            format!("`{name}` takes a whole number from {min} to {max}, as in `{example}`")
        };
        let Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) = self.value
        else {
            return err(self.span(), what);
        };
        if !lit.suffix().is_empty() {
            return err(lit.span(), format!("{what}; leave out the suffix"));
        }
        match lit.base10_parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => err(lit.span(), format!("{what} (got {lit})")),
        }
    }

    fn string(&self, example: &str) -> syn::Result<(String, Span)> {
        match self.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok((s.value(), s.span())),
            _ => err(
                self.span(),
                format!("`{}` takes a string, as in `{example}`", self.name),
            ),
        }
    }

    fn bool(&self) -> syn::Result<bool> {
        match self.value {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }) => Ok(b.value),
            _ => err(self.span(), format!("`{}` is `true` or `false`", self.name)),
        }
    }

    fn glob(&self, example: &str) -> syn::Result<String> {
        let (text, span) = self.string(example)?;
        if let Err(e) = glob::Pattern::new(&text) {
            return err(
                span,
                format!(
                    "`{}`: {text:?} is not a valid glob ({e}); `*` matches any run of \
                     characters, and a literal `[` is written `[[]`",
                    self.name
                ),
            );
        }
        Ok(text)
    }

    fn flavor(&self) -> syn::Result<Flavor> {
        let (text, span) = self.string("flavor = \"multi_thread\"")?;
        match text.as_str() {
            "current_thread" => Ok(Flavor::CurrentThread),
            "multi_thread" => Ok(Flavor::MultiThread),
            other => err(
                span,
                format!("`flavor` is \"current_thread\" or \"multi_thread\", not {other:?}"),
            ),
        }
    }

    fn path(&self) -> syn::Result<syn::Path> {
        let (text, span) = self.string("crate = \"my_tokio\"")?;
        syn::parse_str::<syn::Path>(&text).map_err(|_| {
            syn::Error::new(
                span,
                format!("`crate` takes the path tokio is under, as in `crate = \"my_tokio\"` (got {text:?})"),
            )
        })
    }
}

/// Sets an argument that may be given once.
fn set<T>(
    slot: &mut Option<T>,
    arg: &Arg<'_>,
    value: impl FnOnce(&Arg<'_>) -> syn::Result<T>,
) -> syn::Result<()> {
    once(slot.is_some(), arg.meta, arg.name)?;
    *slot = Some(value(arg)?);
    Ok(())
}

fn once(set: bool, meta: &Meta, name: &str) -> syn::Result<()> {
    if set {
        err(meta.span(), format!("`{name}` is given twice"))
    } else {
        Ok(())
    }
}

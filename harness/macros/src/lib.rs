//! The `#[leakcheck::test]` and `#[leakcheck::isolated]` attributes. Use them through the
//! `leakcheck` crate (feature `macros`, on by default), which re-exports them and holds the
//! runtime they expand to.
//!
//! The expansion is small on purpose: the test becomes an ordinary `#[test]` function that
//! hands its body, its name and place and the checked arguments to `leakcheck::__private`.
//! Everything that can be checked when the test compiles is checked here, so that a typo in an
//! argument is a compile error that names it, never a check that silently does something else.
//! Whatever `#[test]` and `#[tokio::test]` accept is accepted (`signature`), so that a suite
//! converted by a search and replace compiles.
//!
//! The steps, one module each: `args` parses the arguments, `signature` checks the function
//! against them, `emit` writes the expansion.

mod args;
mod emit;
mod signature;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use syn::ItemFn;

/// A test whose body is checked for leaked threads, fds (and, for an async test, tokio tasks),
/// run in a process of its own under a parallel `cargo test`. See the `leakcheck` crate.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Checked, args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// A test run in a process of its own under a parallel `cargo test`, with no check around it:
/// for tests that drive `LeakCheck` themselves. See the `leakcheck` crate.
#[proc_macro_attribute]
pub fn isolated(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Isolated, args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Checked,
    Isolated,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Checked => "#[leakcheck::test]",
            Kind::Isolated => "#[leakcheck::isolated]",
        }
    }
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new(span, msg))
}

/// Parse the function, parse the arguments, check them against each other, write the test.
fn expand(kind: Kind, args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let func = parse_function(kind, item)?;
    let args = args::parse(kind, args)?;
    let facts = signature::check(kind, &func, &args)?;
    Ok(emit::test_fn(kind, &func, &args, &facts))
}

fn parse_function(kind: Kind, item: TokenStream2) -> syn::Result<ItemFn> {
    syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "{} goes on a test function: `fn name() {{ ... }}`",
                kind.attr()
            ),
        )
    })
}

//! What the test function may be: whatever `#[test]` and `#[tokio::test]` accept, so that a
//! suite converted by a search and replace compiles. Where something cannot be a test, the
//! error says what to write instead.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{GenericParam, ItemFn};

use crate::args::{Args, Flavor};
use crate::{err, Kind};

/// What the expansion needs to know about the function.
pub(crate) struct Facts {
    pub(crate) is_async: bool,
    pub(crate) should_panic: bool,
}

/// Checks the function and the arguments against each other.
pub(crate) fn check(kind: Kind, func: &ItemFn, args: &Args) -> syn::Result<Facts> {
    let attr = kind.attr();
    let sig = &func.sig;
    if !sig.inputs.is_empty() {
        return err(
            sig.inputs.span(),
            format!(
                "a {attr} function takes no arguments (nor does a #[test]); build the values \
                 inside the test, or loop over them there"
            ),
        );
    }
    check_generics(attr, &sig.generics)?;
    if let Some(unsafety) = sig.unsafety {
        return err(
            unsafety.span,
            format!(
                "a {attr} function cannot be `unsafe` (nor can a #[test]): remove `unsafe` from \
                 the signature and put the test's unsafe code in an `unsafe {{ ... }}` block"
            ),
        );
    }
    if let Some(abi) = &sig.abi {
        return err(
            abi.span(),
            format!("a {attr} function is a Rust function: remove the `extern` ABI"),
        );
    }
    let is_async = sig.asyncness.is_some();
    check_runtime_args(args, is_async)?;
    Ok(Facts {
        is_async,
        should_panic: check_attrs(attr, func)?,
    })
}

/// Lifetime parameters are fine (`fn traits<'a>()`), as on a `#[test]`; types and consts are
/// not: nothing would choose them.
fn check_generics(attr: &str, generics: &syn::Generics) -> syn::Result<()> {
    for param in &generics.params {
        let what = match param {
            GenericParam::Lifetime(_) => continue,
            GenericParam::Type(_) => "type",
            GenericParam::Const(_) => "const",
        };
        return err(
            param.span(),
            format!(
                "a {attr} function cannot have {what} parameters (nor can a #[test]: nothing \
                 would choose them); write one test per choice, each calling a generic helper \
                 (lifetime parameters are fine)"
            ),
        );
    }
    Ok(())
}

/// The runtime's arguments belong to an async test; `worker_threads` to a multi-thread one.
fn check_runtime_args(args: &Args, is_async: bool) -> syn::Result<()> {
    let rt = &args.runtime;
    if !is_async {
        if let Some((name, span)) = rt.first_given() {
            return err(
                span,
                format!("`{name}` is for an async test; this function is not async"),
            );
        }
    }
    if let (Some((_, span)), Flavor::CurrentThread) = (rt.worker_threads, rt.flavor()) {
        return err(
            span,
            "`worker_threads` needs flavor = \"multi_thread\" (the default flavor, \
             \"current_thread\", runs everything on the test's own thread)",
        );
    }
    Ok(())
}

/// Whether the test should panic; refuses a second test attribute.
fn check_attrs(attr: &str, func: &ItemFn) -> syn::Result<bool> {
    let mut should_panic = false;
    for a in &func.attrs {
        let path = a.path();
        let last = path.segments.last().map(|s| s.ident.to_string());
        let is_test =
            path.is_ident("test") || (path.segments.len() == 2 && last.as_deref() == Some("test"));
        if is_test {
            let written = quote::quote!(#path).to_string().replace(' ', "");
            let runtime = if path.is_ident("test") {
                String::new()
            } else {
                format!(
                    " (an async one gets its tokio runtime from {attr}, which takes `flavor`, \
                     `worker_threads`, `start_paused` and `crate`)"
                )
            };
            return err(
                a.span(),
                format!("remove #[{written}]: {attr} already makes this function a test{runtime}"),
            );
        }
        if path.is_ident("should_panic") {
            should_panic = true;
        }
    }
    Ok(should_panic)
}

/// Where the test's failures point: its name.
pub(crate) fn location_span(func: &ItemFn) -> Span {
    func.sig.ident.span()
}

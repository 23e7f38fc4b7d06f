//! The `#[leakcheck::test]` and `#[leakcheck::isolated]` attributes. Use them through the
//! `leakcheck` crate (feature `macros`, on by default), which re-exports them and holds the
//! runtime they expand to.
//!
//! The expansion is small on purpose: the test becomes an ordinary `#[test]` function that
//! hands its body, its name and the checked arguments to `leakcheck::__private`. Everything
//! that can be checked when the test compiles is checked here, so that a typo in an argument
//! is a compile error that names it, never a check that silently does something else.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ItemFn, Lit, Meta, Token};

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

    fn allowed(self) -> &'static str {
        match self {
            Kind::Checked => {
                "cycles, warmup, settle_ms, ignore_thread, ignore_fd, ignore_created_by, heap, \
                 strict, flavor, worker_threads, timeout_ms"
            }
            Kind::Isolated => "flavor, worker_threads, timeout_ms",
        }
    }
}

#[derive(Default)]
struct Args {
    cycles: Option<u64>,
    warmup: Option<u64>,
    settle_ms: Option<u64>,
    timeout_ms: Option<u64>,
    ignore_thread: Vec<String>,
    ignore_fd: Vec<String>,
    ignore_created_by: Vec<String>,
    heap: bool,
    strict: bool,
    flavor: Option<(Flavor, Span)>,
    worker_threads: Option<(u64, Span)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new(span, msg))
}

/// A whole number in `min..=max`, with an error that names the argument and the range.
fn int(name: &str, value: &Expr, min: u64, max: u64, example: &str) -> syn::Result<u64> {
    let what = || {
        if max == u64::MAX {
            format!("`{name}` takes a whole number of {min} or more, as in `{example}`")
        } else {
            format!("`{name}` takes a whole number from {min} to {max}, as in `{example}`")
        }
    };
    let Expr::Lit(ExprLit {
        lit: Lit::Int(lit), ..
    }) = value
    else {
        return err(value.span(), what());
    };
    if !lit.suffix().is_empty() {
        return err(lit.span(), format!("{}; leave out the suffix", what()));
    }
    match lit.base10_parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => err(lit.span(), format!("{} (got {lit})", what())),
    }
}

fn string(name: &str, value: &Expr, example: &str) -> syn::Result<(String, Span)> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok((s.value(), s.span())),
        _ => err(
            value.span(),
            format!("`{name}` takes a string, as in `{example}`"),
        ),
    }
}

fn glob(name: &str, value: &Expr, example: &str) -> syn::Result<String> {
    let (text, span) = string(name, value, example)?;
    if let Err(e) = glob::Pattern::new(&text) {
        return err(
            span,
            format!(
                "`{name}`: {text:?} is not a valid glob ({e}); `*` matches any run of \
                 characters, and a literal `[` is written `[[]`"
            ),
        );
    }
    Ok(text)
}

fn once(set: bool, meta: &Meta, name: &str) -> syn::Result<()> {
    if set {
        err(meta.span(), format!("`{name}` is given twice"))
    } else {
        Ok(())
    }
}

fn parse_args(kind: Kind, tokens: TokenStream2) -> syn::Result<Args> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    let mut args = Args::default();
    for meta in metas {
        let name = meta
            .path()
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_else(|| quote!(#meta).to_string());
        let known = kind.allowed().split(", ").any(|a| a == name);
        if !known {
            return err(
                meta.path().span(),
                format!(
                    "unknown argument `{name}` to {}; allowed: {}",
                    kind.attr(),
                    kind.allowed()
                ),
            );
        }
        if name == "heap" {
            if !matches!(meta, Meta::Path(_)) {
                return err(
                    meta.span(),
                    "`heap` is a flag: write `heap` (it counts live heap blocks; install \
                     leakcheck::CountingAlloc as the test crate's #[global_allocator])",
                );
            }
            once(args.heap, &meta, &name)?;
            args.heap = true;
            continue;
        }
        if name == "strict" {
            if !matches!(meta, Meta::Path(_)) {
                return err(
                    meta.span(),
                    "`strict` is a flag: write `strict` (threads made by a one-time \
                     initializer then count as leaks)",
                );
            }
            once(args.strict, &meta, &name)?;
            args.strict = true;
            continue;
        }
        let value = match &meta {
            Meta::NameValue(nv) => &nv.value,
            _ => {
                return err(
                    meta.span(),
                    format!("`{name}` takes a value: `{name} = ...`"),
                )
            }
        };
        let once = |set: bool| once(set, &meta, &name);
        match name.as_str() {
            "cycles" => {
                once(args.cycles.is_some())?;
                args.cycles = Some(int(&name, value, 1, 1_000_000, "cycles = 20")?);
            }
            "warmup" => {
                once(args.warmup.is_some())?;
                args.warmup = Some(int(&name, value, 0, 1_000_000, "warmup = 1")?);
            }
            "settle_ms" => {
                once(args.settle_ms.is_some())?;
                // One hour: a budget longer than that is a typo, not a slow component.
                args.settle_ms = Some(int(&name, value, 0, 3_600_000, "settle_ms = 500")?);
            }
            "timeout_ms" => {
                once(args.timeout_ms.is_some())?;
                args.timeout_ms = Some(int(&name, value, 1, u64::MAX, "timeout_ms = 60000")?);
            }
            "ignore_thread" => {
                args.ignore_thread
                    .push(glob(&name, value, "ignore_thread = \"tokio-rt-worker\"")?)
            }
            "ignore_fd" => args
                .ignore_fd
                .push(glob(&name, value, "ignore_fd = \"/var/log/*\"")?),
            "ignore_created_by" => args.ignore_created_by.push(glob(
                &name,
                value,
                "ignore_created_by = \"threadpool::*\"",
            )?),
            "flavor" => {
                once(args.flavor.is_some())?;
                let (text, span) = string(&name, value, "flavor = \"multi_thread\"")?;
                let flavor = match text.as_str() {
                    "current_thread" => Flavor::CurrentThread,
                    "multi_thread" => Flavor::MultiThread,
                    other => {
                        return err(
                            span,
                            format!(
                                "`flavor` is \"current_thread\" or \"multi_thread\", \
                                 not {other:?}"
                            ),
                        )
                    }
                };
                args.flavor = Some((flavor, span));
            }
            "worker_threads" => {
                once(args.worker_threads.is_some())?;
                let n = int(&name, value, 1, 4096, "worker_threads = 2")?;
                args.worker_threads = Some((n, value.span()));
            }
            _ => unreachable!("every allowed argument is handled"),
        }
    }
    Ok(args)
}

fn expand(kind: Kind, args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let func: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "{} goes on a test function: `fn name() {{ ... }}`",
                kind.attr()
            ),
        )
    })?;
    let args = parse_args(kind, args)?;
    let sig = &func.sig;
    let ident = &sig.ident;
    if !sig.inputs.is_empty() {
        return err(
            sig.inputs.span(),
            format!("a {} function takes no arguments", kind.attr()),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return err(
            sig.generics.span(),
            format!("a {} function cannot be generic", kind.attr()),
        );
    }
    for (bad, what) in [
        (sig.constness.map(|t| t.span), "const"),
        (sig.unsafety.map(|t| t.span), "unsafe"),
        (sig.abi.as_ref().map(|a| a.span()), "extern"),
    ] {
        if let Some(span) = bad {
            return err(span, format!("a {} function cannot be {what}", kind.attr()));
        }
    }
    let is_async = sig.asyncness.is_some();
    if !is_async {
        if let Some((_, span)) = args.flavor {
            return err(
                span,
                "`flavor` is for an async test; this function is not async",
            );
        }
        if let Some((_, span)) = args.worker_threads {
            return err(
                span,
                "`worker_threads` is for an async test with flavor = \"multi_thread\"; \
                 this function is not async",
            );
        }
    }
    let flavor = args
        .flavor
        .map_or(Flavor::CurrentThread, |(flavor, _)| flavor);
    if let (Some((_, span)), Flavor::CurrentThread) = (args.worker_threads, flavor) {
        return err(
            span,
            "`worker_threads` needs flavor = \"multi_thread\" (the default flavor, \
             \"current_thread\", runs everything on the test's own thread)",
        );
    }

    let mut should_panic = false;
    for attr in &func.attrs {
        let path = attr.path();
        if path.is_ident("test") {
            return err(
                attr.span(),
                format!(
                    "remove #[test]: {} already makes this function a test",
                    kind.attr()
                ),
            );
        }
        if path.is_ident("should_panic") {
            should_panic = true;
        }
    }

    let attrs = &func.attrs;
    let vis = &func.vis;
    let output = &sig.output;
    let block = &func.block;
    let name = ident.to_string();
    let private = quote!(::leakcheck::__private);
    let timeout = match args.timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    let test = quote! {
        #private::Test {
            module_path: ::core::module_path!(),
            name: #name,
            should_panic: #should_panic,
            timeout_ms: #timeout,
        }
    };
    let check = match kind {
        Kind::Isolated => quote!(::core::option::Option::None),
        Kind::Checked => {
            let opt = |v: Option<u64>| match v {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            let (cycles, warmup, settle_ms) =
                (opt(args.cycles), opt(args.warmup), opt(args.settle_ms));
            let (threads, fds, heap) = (&args.ignore_thread, &args.ignore_fd, args.heap);
            let (created_by, strict) = (&args.ignore_created_by, args.strict);
            quote! {
                ::core::option::Option::Some(#private::Check {
                    cycles: #cycles,
                    warmup: #warmup,
                    settle_ms: #settle_ms,
                    ignore_thread: &[#(#threads),*],
                    ignore_fd: &[#(#fds),*],
                    ignore_created_by: &[#(#created_by),*],
                    heap: #heap,
                    strict: #strict,
                })
            }
        }
    };
    let span = ident.span();
    let body = if is_async {
        let flavor = match (flavor, args.worker_threads) {
            (Flavor::CurrentThread, _) => quote!(#private::Flavor::CurrentThread),
            (Flavor::MultiThread, Some((n, _))) => {
                let n = n as usize;
                quote!(#private::Flavor::MultiThread { worker_threads: ::core::option::Option::Some(#n) })
            }
            (Flavor::MultiThread, None) => {
                quote!(#private::Flavor::MultiThread { worker_threads: ::core::option::Option::None })
            }
        };
        quote_spanned! {span=>
            #private::require_tokio_for_async_tests!();
            async fn __leakcheck_body() #output #block
            #private::run_async(#test, #check, #flavor, __leakcheck_body)
        }
    } else {
        quote_spanned! {span=>
            fn __leakcheck_body() #output #block
            #private::run(#test, #check, __leakcheck_body)
        }
    };
    Ok(quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #ident() {
            #body
        }
    })
}

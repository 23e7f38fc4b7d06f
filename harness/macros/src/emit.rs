//! The expansion: an ordinary `#[test]` function that hands the body, the test's name and
//! place, and the checked arguments to `leakcheck::__private`.
//!
//! An async test's tokio runtime is built here, in the test crate, from the test crate's own
//! `::tokio` (which it depends on to write an async tokio test at all), so that leakcheck
//! needs no tokio of its own for it: the harness gets the runtime as three closures (run one
//! cycle of the body, wait a while on the runtime, count its alive tasks).

use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::ItemFn;

use crate::args::{Args, Flavor};
use crate::signature::{self, Facts};
use crate::Kind;

fn private() -> TokenStream2 {
    quote!(::leakcheck::__private)
}

fn option(v: Option<u64>) -> TokenStream2 {
    match v {
        Some(n) => quote!(::std::option::Option::Some(#n)),
        None => quote!(::std::option::Option::None),
    }
}

/// The whole test function.
pub(crate) fn test_fn(kind: Kind, func: &ItemFn, args: &Args, facts: &Facts) -> TokenStream2 {
    let attrs = &func.attrs;
    let vis = &func.vis;
    let ident = &func.sig.ident;
    let test = test_value(func, args, facts);
    let check = check_value(kind, args);
    let body = if facts.is_async {
        async_body(func, args, &test, &check)
    } else {
        sync_body(func, &test, &check)
    };
    quote! {
        #[::std::prelude::v1::test]
        #(#attrs)*
        #vis fn #ident() {
            #body
        }
    }
}

/// The body as a function of its own, with the test's generics, return type and constness.
fn body_fn(func: &ItemFn) -> TokenStream2 {
    let sig = &func.sig;
    let (constness, asyncness) = (&sig.constness, &sig.asyncness);
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let (output, block) = (&sig.output, &func.block);
    quote! {
        #constness #asyncness fn __leakcheck_body #generics () #output #where_clause #block
    }
}

/// `__private::Test`: the test's name, where it is, and what the harness must know of it.
/// `Location::caller()` spanned on the test's name is the `file:line:column` of that name.
/// Paths start at `::std`, which resolves in every edition (a 2015 crate has no `::core`).
fn test_value(func: &ItemFn, args: &Args, facts: &Facts) -> TokenStream2 {
    let private = private();
    let name = func.sig.ident.to_string();
    let should_panic = facts.should_panic;
    let timeout = option(args.timeout_ms);
    let span = signature::location_span(func);
    let location = quote_spanned!(span=> ::std::panic::Location::caller());
    quote! {
        #private::Test {
            module_path: ::std::module_path!(),
            name: #name,
            location: #location,
            manifest_dir: ::std::env!("CARGO_MANIFEST_DIR"),
            should_panic: #should_panic,
            timeout_ms: #timeout,
        }
    }
}

/// `__private::Check` for a checked test; `None` for an isolated one.
fn check_value(kind: Kind, args: &Args) -> TokenStream2 {
    let private = private();
    if kind == Kind::Isolated {
        return quote!(::std::option::Option::None);
    }
    let (cycles, warmup) = (option(args.cycles), option(args.warmup));
    let settle_ms = option(args.settle_ms);
    let (threads, fds, heap) = (&args.ignore_thread, &args.ignore_fd, args.heap);
    let (created_by, strict) = (&args.ignore_created_by, args.strict);
    quote! {
        ::std::option::Option::Some(#private::Check {
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

fn sync_body(func: &ItemFn, test: &TokenStream2, check: &TokenStream2) -> TokenStream2 {
    let private = private();
    let body_fn = body_fn(func);
    quote! {
        #body_fn
        #private::run(#test, #check, __leakcheck_body)
    }
}

/// Builds the runtime in the test crate and runs the body on it through the harness.
fn async_body(
    func: &ItemFn,
    args: &Args,
    test: &TokenStream2,
    check: &TokenStream2,
) -> TokenStream2 {
    let private = private();
    let body_fn = body_fn(func);
    let tokio = tokio_path(args);
    let builder = runtime_builder(args, &tokio);
    let span = func
        .sig
        .asyncness
        .map_or_else(proc_macro2::Span::call_site, |a| a.span);
    // Spanned on `async`: a test crate without tokio is told so there.
    let (sleep, yield_now) = (
        quote_spanned!(span=> #tokio::time::sleep),
        quote_spanned!(span=> #tokio::task::yield_now),
    );
    quote! {
        #body_fn
        #private::run_async(#test, #check, |__leakcheck_run: #private::AsyncRun| {
            let mut __builder = #builder;
            #private::instrument_runtime!(__builder);
            let __rt = #private::built(__builder.build());
            let __handle = __rt.handle().clone();
            let __ran = __leakcheck_run.run(
                #private::task_counter!(__handle),
                || __rt.block_on(__leakcheck_body()),
                |d| __rt.block_on(#private::wait_on_runtime(d, || #sleep(d), #yield_now)),
            );
            __rt.shutdown_timeout(#private::SHUTDOWN);
            __ran.finish()
        })
    }
}

/// `::tokio`, or the path given as `crate = ".."`.
fn tokio_path(args: &Args) -> TokenStream2 {
    match &args.runtime.tokio {
        Some((path, _)) => quote!(#path),
        None => quote!(::tokio),
    }
}

/// The runtime `#[tokio::test]` would build, with the blocking pool's idle threads let go
/// quickly (see `__private::BLOCKING_KEEP_ALIVE`).
fn runtime_builder(args: &Args, tokio: &TokenStream2) -> TokenStream2 {
    let private = private();
    let rt = &args.runtime;
    let new = match (rt.flavor(), rt.worker_threads) {
        (Flavor::CurrentThread, _) => quote!(#tokio::runtime::Builder::new_current_thread()),
        (Flavor::MultiThread, None) => quote!(#tokio::runtime::Builder::new_multi_thread()),
        (Flavor::MultiThread, Some((n, _))) => {
            let n = n as usize;
            quote!({
                let mut b = #tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(#n);
                b
            })
        }
    };
    let paused = match rt.start_paused {
        Some((true, _)) => quote!(b.start_paused(true);),
        _ => quote!(),
    };
    quote!({
        let mut b = #new;
        b.enable_all().thread_keep_alive(#private::BLOCKING_KEEP_ALIVE);
        #paused
        b
    })
}

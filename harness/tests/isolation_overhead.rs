//! Subjects of `benches/isolation_overhead.sh`, not tests of their own: the same small body
//! (a thread spawned and joined, a file opened and closed) as `N` plain `#[test]`s and as `N`
//! `#[leakcheck::test]`s, so that the script can time what isolation adds per test, beside
//! cargo nextest's own per-test cost on the plain ones. They are `#[ignore]`d so that the
//! suite does not run them; `harness/tests/attribute.rs` holds the checked tests that assert.
#![cfg(target_os = "linux")]

fn body() {
    std::thread::spawn(|| ()).join().unwrap();
    drop(std::fs::File::open("Cargo.toml").unwrap());
}

macro_rules! subjects {
    ($($name:ident)*) => {
        mod plain {
            $(
                #[test]
                #[ignore = "bench subject: benches/isolation_overhead.sh"]
                fn $name() {
                    super::body();
                }
            )*
        }
        mod attr {
            $(
                #[leakcheck::test]
                #[ignore = "bench subject: benches/isolation_overhead.sh"]
                fn $name() {
                    super::body();
                }
            )*
        }
    };
}

subjects! {
    t00 t01 t02 t03 t04 t05 t06 t07 t08 t09 t10 t11 t12 t13 t14 t15 t16 t17 t18 t19 t20 t21
    t22 t23 t24 t25 t26 t27 t28 t29 t30 t31 t32 t33 t34 t35 t36 t37 t38 t39 t40 t41 t42 t43
    t44 t45 t46 t47 t48 t49 t50 t51 t52 t53 t54 t55 t56 t57 t58 t59 t60 t61 t62 t63
}

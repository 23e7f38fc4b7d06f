//! Arguments that are unknown, of the wrong type or out of range, and misplaced attributes,
//! are compile errors that name the argument and what is allowed.

#[test]
fn bad_arguments_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

//! Build script: compiles `csrc/exec_shim.c` (the C-variadic execl, execlp,
//! execle; see the comment at the top of that file for why they are in C)
//! into a static library linked into the cdylib.

fn main() {
    println!("cargo:rerun-if-changed=csrc/exec_shim.c");
    cc::Build::new()
        .file("csrc/exec_shim.c")
        .flag_if_supported("-fvisibility=hidden")
        .flag_if_supported("-std=c11")
        .warnings(true)
        .compile("roar_exec_shim");
}

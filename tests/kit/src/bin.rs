//! The binaries this build made, found from the running test's place in the target directory.

use std::path::PathBuf;

/// `target/<profile>`: where cargo puts the binaries, with `examples/` in it. A test binary
/// runs from `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary runs from target/<profile>/deps")
        .to_owned()
}

/// Where example `name`'s binary is, `target/<profile>/examples/<name>`, whether or not it
/// was built.
pub fn example_path(name: &str) -> PathBuf {
    profile_dir().join("examples").join(name)
}

/// Example `name` of `package`; a panic saying how to build it when it is missing. `cargo
/// test -p <package>` builds a package's examples next to its tests.
pub fn example(package: &str, name: &str) -> PathBuf {
    let path = example_path(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --profile test -p {package} --examples`",
        path.display()
    );
    path
}

//! The real `conflict-resolver` binary: refuses bad configuration with one line, serves until SIGTERM.

harness::binary_tests!("conflict-resolver");

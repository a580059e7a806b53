//! The real `user-sync` binary: refuses bad configuration with one line, serves until SIGTERM.

harness::binary_tests!("user-sync");

//! The real `sync-monitor` binary: refuses bad configuration with one line, serves until SIGTERM.

harness::binary_tests!("sync-monitor");

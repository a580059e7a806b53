pub mod merge;

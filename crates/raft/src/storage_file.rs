//! File storage: a write-ahead log. (Being written; see FileStorage.)

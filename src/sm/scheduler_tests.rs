//! Unit and property tests of sessions and tasks (written next).

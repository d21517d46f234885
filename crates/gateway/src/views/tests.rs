//! Unit tests of the views.

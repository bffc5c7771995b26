//! Tests of the private `wire` and `map` modules that used to be integration tests: the
//! property tests of every decoder and of the mapping.

mod prop_decode;

//! Tests of the private `wire` and `map` modules that used to be integration tests: the
//! documented example (snapshot) and the rule table, the property tests of every decoder and
//! of the mapping, and the simulator-vs-fixture comparison.

mod mapping;
mod prop_decode;
mod sim_fixture;

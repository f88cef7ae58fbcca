mod conformance_copy;
mod model;

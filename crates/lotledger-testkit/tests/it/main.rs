mod conformance_copy;

//! HTTP client for the raftkv API (under construction).

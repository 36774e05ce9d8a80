pub mod fast;

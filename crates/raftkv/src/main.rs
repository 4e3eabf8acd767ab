fn main() { println!("raftkv: under construction"); }

fn main() { println!("{}", tensorflow::version().unwrap()); }

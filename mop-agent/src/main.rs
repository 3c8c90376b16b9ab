fn main() { println!("{}", include_bytes!(concat!(env!("OUT_DIR"), "/mop-agent-ebpf")).len()); }

//! Byte-by-byte feeding and every 2-way split of every segment give the same exchanges.

-- The node's state as one ordered map of byte keys to byte values, as the `Store` trait sees
-- it. bytea compares bytewise, so key order is the trait's order and a prefix scan is a range
-- query on the primary key.
CREATE TABLE kv (
    key   bytea PRIMARY KEY,
    value bytea NOT NULL
);

-- merge_upsert errors that carry the server's own text, which differs by
-- PostgreSQL version: expected/merge_upsert_server_text.out is 15's,
-- merge_upsert_server_text_1.out 17's and 18's ("Multidimensional arrays
-- must have sub-arrays with matching dimensions").

CREATE TABLE ragged (id int PRIMARY KEY, tags text[]);
-- a ragged array: the message names table and column, the detail is the server's
SELECT regress.err($$SELECT syncguard.merge_upsert('ragged', '{"id": 1}', '{"tags": [[1], 2]}')$$);
DROP TABLE ragged;

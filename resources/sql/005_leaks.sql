-- 005: leaks. The curation settings behind every duplicate decision and the scores of every
-- duplicate edge.

ALTER TABLE duplicates ADD COLUMN settings VARCHAR;          -- JSON: the lake's curation settings
ALTER TABLE duplicate_pairs ADD COLUMN cosine DOUBLE;        -- embedding cosine of the pair
ALTER TABLE duplicate_pairs ADD COLUMN pixel_ncc DOUBLE;     -- ZNCC at the best alignment
ALTER TABLE duplicate_pairs ADD COLUMN pixel_gradient DOUBLE; -- gradient cosine there
ALTER TABLE duplicate_pairs ADD COLUMN settings VARCHAR;

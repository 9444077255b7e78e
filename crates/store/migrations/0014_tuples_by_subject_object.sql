-- Relationship checks look a tuple up by its subject, relation and
-- object. The old subject index stopped at the object type, so a check on
-- PostgreSQL read every tuple of that subject and relation on objects of
-- that type, such as every thread a user takes part in, and filtered on
-- the object id. The new index ends with the object id and finds the one
-- row. It also serves every query on a prefix of the old index, which is
-- dropped.
CREATE INDEX tuples_by_subject_object
    ON tuples (subject_type, subject_id, relation, object_type, object_id);

DROP INDEX tuples_by_subject;

-- Delta jobs are looked up by their version (every version shown, every manifest signed
-- against a base); the primary key starts with the base, so without this index each
-- lookup scanned the table (0.84 ms at 30,000 jobs on SQLite, 0.011 ms with it).
CREATE INDEX delta_jobs_version ON delta_jobs (version_id);

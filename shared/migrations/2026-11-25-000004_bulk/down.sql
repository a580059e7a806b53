DROP TABLE bulk.job_errors;
DROP TABLE bulk.jobs;

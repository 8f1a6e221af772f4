-- One server, two databases: MLflow's tracking/registry store and the prediction log (with the
-- drift report index). Run once by the postgres image on an empty data volume.
CREATE DATABASE mlflow;
CREATE DATABASE predictions;

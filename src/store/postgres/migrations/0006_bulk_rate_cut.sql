-- A rate-limit answer (130429) shared by every worker of the sending number: the rate it was
-- cut to and when (the database's clock, epoch seconds). Every worker's next take pauses for
-- a second, then refills at the cut rate, stepping back up by 1.25 every 2 s without another
-- cut, as a single run's own pacer does.
ALTER TABLE bulk_rate ADD COLUMN cut_rate DOUBLE PRECISION;
ALTER TABLE bulk_rate ADD COLUMN cut_at DOUBLE PRECISION;

"""Batch jobs: a GLM-TTS JSONL in, a folder of wavs, a manifest and a zip out, surviving crashes.

    interface.py    the job queue every store offers (JobQueue): states, errors, one progress record (the page words it: ui/batch.py)
    batchfile.py    batch files: parsing and checks (once, at submit), items as stored records
    runner.py       the one way an item runs (both stores and the CLI): synthesis, its files, its record
    manifest.py     a job's folder: its id, the synced manifest, the zip
    disk_store.py   DiskJobQueue: jobs on local disk, one worker, interrupted jobs resumed by hand
    redis_store.py  RedisJobQueue: jobs in Redis (GLMTTS_REDIS_URL), items leased to every replica

The service chooses the store once (glmtts.service); nothing here imports redis unless it is chosen.
"""

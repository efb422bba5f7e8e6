import * as migration_20261128_202135_initial from './20261128_202135_initial';
import * as migration_20261129_235109_media_storage_columns from './20261129_235109_media_storage_columns';
import * as migration_20261207_112320_jobs_queue from './20261207_112320_jobs_queue';

export const migrations = [
  {
    up: migration_20261128_202135_initial.up,
    down: migration_20261128_202135_initial.down,
    name: '20261128_202135_initial',
  },
  {
    up: migration_20261129_235109_media_storage_columns.up,
    down: migration_20261129_235109_media_storage_columns.down,
    name: '20261129_235109_media_storage_columns',
  },
  {
    up: migration_20261207_112320_jobs_queue.up,
    down: migration_20261207_112320_jobs_queue.down,
    name: '20261207_112320_jobs_queue'
  },
];

// Knex, used the ordinary way, saves a stale row to a table protected with
// last_write_wins (run by tests/client/tests/orm_stale_writes.rs; see django_stale.py).
//
//   update      .where().update().returning('*')
//   upsert      .insert().onConflict('id').merge().returning('*')
//   count       .where().update() without returning: the affected row count
//   fresh       an upsert with a newer synced_at
//
// Prints one JSON object: each step's rows (or count), or its error.
const [host, port, user, database, staleAt, freshAt] = process.argv.slice(2);
const knex = require('knex')({ client: 'pg', connection: { host, port: Number(port), user, database } });

async function step(fn) {
  try {
    return { result: await fn() };
  } catch (e) {
    return { error: `${e.name}: ${e.message}` };
  }
}

(async () => {
  const t = () => knex('profiles_lww');
  const out = {
    update: await step(() => t().where({ id: 1 }).update({ name: 'stale update', synced_at: staleAt }).returning('*')),
    upsert: await step(() => t().insert({ id: 1, name: 'stale upsert', synced_at: staleAt }).onConflict('id').merge().returning('*')),
    count: await step(() => t().where({ id: 1 }).update({ name: 'stale count', synced_at: staleAt })),
    fresh: await step(() => t().insert({ id: 1, name: 'fresh', synced_at: freshAt }).onConflict('id').merge().returning('*')),
  };
  console.log(JSON.stringify(out));
  await knex.destroy();
})();

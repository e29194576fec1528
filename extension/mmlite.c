/*-------------------------------------------------------------------------
 * mmlite.c
 *	  Logical decoding output plugin "mmlite": pgoutput plus origin filtering.
 *
 * Why this exists: mmlite builds an echo-free multi-master mesh. Every node
 * subscribes to every other node, so a row applied by a subscription (which
 * the apply worker tags with a replication origin) must never be sent on to
 * anyone else, or it would bounce around the mesh forever.
 *
 * PostgreSQL 16+ has this natively (CREATE SUBSCRIPTION ... WITH (origin =
 * none)), and mmlite uses that whenever both ends are 16+. pgoutput in
 * PostgreSQL < 16 ignores origins entirely, so for those publishers the
 * subscription is pointed at a slot created with this plugin instead.
 *
 * The plugin is a thin wrapper: it loads pgoutput's own init function, so
 * every callback (and therefore the wire protocol) is exactly pgoutput's,
 * and then only replaces filter_by_origin_cb with one that drops every
 * change carrying a replication origin -- i.e. exactly "origin = none".
 * pgoutput may have installed its own filter_by_origin_cb (16+ honours the
 * "origin" option there); we override it unconditionally.
 *
 * Builds with PGXS against PostgreSQL 11 to 18 (same headers as contrib's
 * test_decoding).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"

PG_MODULE_MAGIC;

/*
 * Declared in output_plugin.h since PostgreSQL 16 only; an identical
 * redeclaration there is harmless, and before 16 it keeps
 * -Wmissing-prototypes quiet.
 */
extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

/*
 * RepOriginId / InvalidRepOriginId (11..18) are spelled ReplOriginId /
 * InvalidReplOriginId in the PostgreSQL 19 development tree.
 */
#if PG_VERSION_NUM >= 190000
typedef ReplOriginId mmlite_origin_id;
#define MMLITE_INVALID_ORIGIN InvalidReplOriginId
#else
typedef RepOriginId mmlite_origin_id;
#define MMLITE_INVALID_ORIGIN InvalidRepOriginId
#endif

static bool mmlite_filter_by_origin(LogicalDecodingContext *ctx,
									mmlite_origin_id origin_id);

/* true = filter the change out: anything that was replicated in from elsewhere */
static bool
mmlite_filter_by_origin(LogicalDecodingContext *ctx, mmlite_origin_id origin_id)
{
	(void) ctx;
	return origin_id != MMLITE_INVALID_ORIGIN;
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	LogicalOutputPluginInit pgoutput_init;

	/*
	 * load_external_function() returns PGFunction before PostgreSQL 15 and
	 * void * from then on; going through void * compiles cleanly (including
	 * under -Wcast-function-type) on every version.
	 */
	pgoutput_init = (LogicalOutputPluginInit) (void *)
		load_external_function("pgoutput", "_PG_output_plugin_init",
							   false, NULL);
	if (pgoutput_init == NULL)
		elog(ERROR, "mmlite: could not load pgoutput's _PG_output_plugin_init");

	pgoutput_init(cb);

	cb->filter_by_origin_cb = mmlite_filter_by_origin;
}

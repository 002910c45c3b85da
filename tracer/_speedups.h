/* What the three files of spectrace.tracer._speedups share: _speedups.c (the module, install(),
 * the span() factory, the per-thread cache), _speedups_span.c (a span's enter and exit) and
 * _speedups_types.c (the SpanCore and StateCore types). */
#ifndef SPECTRACE_SPEEDUPS_H
#define SPECTRACE_SPEEDUPS_H

#include <time.h>

/* A span keeps up to this many keyword attributes as the call passed them (names tuple + values)
 * and builds the dict only when something reads `attributes` (an exporter, set(), a capture's
 * reader): VizTracer's habit, fixed-size entries on the hot path, formatting at export. More
 * attributes than this build the dict at once. */
#define KW_INLINE 4

/* A span's fields: the base of tracer._record.Span (the pure-Python fallback declares the same
 * names as __slots__). Times and the id are C integers; everything else is an object. */
typedef struct {
    PyObject_HEAD
    long long span_id;
    long long start_ns;
    long long end_ns;
    PyObject *name;
    PyObject *attributes;           /* the dict, or NULL while kw_names/kw_values hold them */
    PyObject *kw_names;             /* the span() call's keyword names (a tuple), or NULL */
    PyObject *kw_values[KW_INLINE];
    PyObject *io;
    PyObject *transfers;
    PyObject *token;                /* _token: the ContextVar token of __enter__ */
    PyObject *parent;               /* _parent */
    PyObject *window;               /* _window: the nearest enclosing window */
    PyObject *thread_id;
    PyObject *thread_name;
    char pooled;                    /* made by span() as spt.span_type: may go to the free list once freed */
} SpanCore;

/* The STATE fields every span reads: the base of tracer._state._State. */
typedef struct {
    PyObject_HEAD
    char enabled;
    char gated;
    char exporting;
    Py_ssize_t max_spans;
    long long offered;
    long long unexported;
    long long dropped;
    PyObject *captures;
    PyObject *pending;
    PyObject *on_root_start;
    PyObject *on_root_end;
    PyObject *mirror;               /* _mirror */
} StateCore;

extern PyTypeObject SpanCoreType;
extern PyTypeObject StateCoreType;

#define IS_SPAN(o) PyObject_TypeCheck((o), &SpanCoreType)

/* What install() took from tracer/_core.py, and the module's own few globals: one struct with
 * one exported name (spt), so no symbol of this module can clash with another library's. */
typedef struct {
    StateCore *state;               /* STATE */
    PyObject *current_var;          /* the current-span ContextVar */
    PyObject *unsampled;            /* UNSAMPLED */
    PyObject *noop;                 /* NOOP */
    PyTypeObject *span_type;        /* ActiveSpan */
    PyTypeObject *mirrored_type;    /* MirroredSpan */
    PyObject *empty_io, *empty_transfers;
    /* the Python code that owns each rare case */
    PyObject *enter_py, *exit_py, *finish_py, *roll_up_py, *count_drop_py, *internal_error_py;
    PyObject *thread_pair_py;       /* () -> (OS thread id, thread name) */
    PyObject *perf_counter_py;      /* the recorder's clock (_core.perf_counter_ns), called unless native */
    int native_clock;               /* it is perf_counter_ns, and that is CLOCK_MONOTONIC: read it here */
    long long last_span_id;         /* one id counter for C and Python (_core._next_id) */
    PyObject *str_append, *str_add, *str_window_data, *str_chunks, *str_prefill_chunk;
} SptGlobals;

extern SptGlobals spt;

/* The recorder's clock: time.perf_counter_ns(), read without a Python call where it is
 * CLOCK_MONOTONIC (Linux); set_clock() (tracer/_accel.py) decides. */
static inline int
spt_now_ns(long long *out)
{
#ifdef CLOCK_MONOTONIC
    if (spt.native_clock) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        *out = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        return 0;
    }
#endif
    PyObject *r = PyObject_CallNoArgs(spt.perf_counter_py);  /* elsewhere: the function Python calls */
    if (r == NULL)
        return -1;
    *out = PyLong_AsLongLong(r);
    Py_DECREF(r);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* _speedups.c: this thread's (OS id, name), borrowed references. */
int spt_thread_pair(PyObject **tid, PyObject **tname);

/* _speedups_types.c: a new ActiveSpan (tp, spt.span_type) for span(): from the free list of
 * ended ones when it has one; spt_span_pool_clear() empties that list (install()). */
SpanCore *spt_span_alloc(PyTypeObject *tp);
void spt_span_pool_clear(void);
/* _speedups_types.c: give ActiveSpan (install()'s span_type) its own tp_dealloc where it can. */
void spt_span_type_setup(PyTypeObject *tp);

/* _speedups_types.c: a span's name and attributes, held lazily. */
int spt_attrs_hold(SpanCore *s, PyObject *name, PyObject *const *values, PyObject *kwnames);
PyObject *spt_attrs_dict(SpanCore *s);
void spt_attrs_set_dict(SpanCore *s, PyObject *name, PyObject *dict);

/* _speedups_types.c: SpanCore's _enter and _exit (after PyType_Ready(&SpanCoreType)). */
int spt_add_span_methods(void);

/* _speedups_span.c: SpanCore._enter and SpanCore._exit. */
PyObject *spt_span_enter(SpanCore *self, PyObject *unused);
PyObject *spt_span_exit(SpanCore *self, PyObject *const *args, Py_ssize_t nargs);

#endif

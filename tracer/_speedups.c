/* spectrace.tracer._speedups: the span hot path of tracer/_core.py in C (issue 19, target 3).
 *
 * Why C: `with tracer.span(name, **attrs):` in pure Python is three Python frames, a keyword
 * dict, two clock calls and a context-variable set/reset; its floor is ~600 ns on the 2-core
 * dev machine, above jax.profiler.TraceAnnotation (a C++ object, ~240 ns). Here the factory and
 * the span's enter/exit are C calls (VizTracer's snaptrace.c is the model).
 *
 * Only the *common* case is here, doing exactly what the pure-Python common path does; every
 * rare case (re-entry, a misplaced exit, an exception, an unsampled root or a root hook, a
 * parent that ended first, windows, mirrored spans, misuse reports, internal errors) calls the
 * Python code back, so each rule has one implementation. tracer/_accel.py decides whether this
 * module is used; SPECTRACE_PURE_PYTHON=1 forces the fallback.
 *
 *   _speedups.c        this module: install(), span(name, /, **attributes), the thread cache
 *   _speedups_span.c   SpanCore._enter / _exit (ActiveSpan.__enter__ / __exit__)
 *   _speedups_types.c  SpanCore (base of tracer._record.Span), StateCore (base of _state._State),
 *                      the _enter/_exit descriptors, the free list of spans, ActiveSpan's dealloc
 *
 * What a recorded span's ~230 ns go to (perf, 3.11, 2-core dev machine): the `with` statement
 * itself (the loop's bytecode, two type lookups, two calls), the context variable (a Token and
 * two new HAMTs a span: ~70 ns), two CLOCK_MONOTONIC reads (~30 ns), and ~40 ns of this module.
 * The allocations that are this module's own are kept off the allocator: a `with` gets one
 * bound method for __enter__ and __exit__ from a free list (not two builtin-method objects),
 * ended spans go back to a free list for span(), and ActiveSpan has a dealloc of its own
 * instead of CPython's generic subtype_dealloc (_speedups_types.c says when each applies).
 *
 * CPython 3.11 and 3.12, public C API only, but for _PyObject_GetDictPtr (the managed __dict__
 * of a span, in ActiveSpan's dealloc; 3.11/3.12 only). Static types; the GIL guards the id
 * counter, the books and the free lists, as it guards the Python versions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_speedups.h"

SptGlobals spt;

/* ---- the per-thread (OS id, name) cache: get_native_id is a syscall (~280 ns under gVisor) ----
 * One strong reference per OS thread (never released: a thread's pair outlives no more than
 * one string and one int). A forked child's thread has a new OS id: after_fork() bumps the
 * generation, so the next span looks it up again. */
#if defined(_MSC_VER)
#define THREAD_LOCAL __declspec(thread)
#else
#define THREAD_LOCAL _Thread_local
#endif
typedef struct {
    unsigned long generation;  /* == fork_generation while id and name are this process's */
    PyObject *id;
    PyObject *name;
} ThreadPair;
static THREAD_LOCAL ThreadPair tls_thread;
static unsigned long fork_generation = 1;

int
spt_thread_pair(PyObject **tid, PyObject **tname)
{
    ThreadPair *t = &tls_thread;  /* a thread-local of a shared library: a __tls_get_addr call */
#if defined(__GNUC__)
    __asm__("" : "+r"(t));  /* one call, kept in a register (GCC otherwise made a second one) */
#endif
    if (t->generation != fork_generation) {
        PyObject *pair = PyObject_CallNoArgs(spt.thread_pair_py);
        if (pair == NULL)
            return -1;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            Py_DECREF(pair);
            PyErr_SetString(PyExc_TypeError, "_thread_pair() must return (thread id, thread name)");
            return -1;
        }
        Py_XSETREF(t->id, Py_NewRef(PyTuple_GET_ITEM(pair, 0)));
        Py_XSETREF(t->name, Py_NewRef(PyTuple_GET_ITEM(pair, 1)));
        Py_DECREF(pair);
        t->generation = fork_generation;
    }
    *tid = t->id;
    *tname = t->name;
    return 0;
}

/* ---- span(name, /, **attributes) ---- */

/* What the last disabled span() call named: NOOP used as a decorator reads it (noop_last()).
 * Kept like a span's lazy attributes, so a disabled call allocates nothing. */
static SpanCore *noop_last_holder;  /* a bare SpanCore used only as storage */
static int noop_last_window;

PyDoc_STRVAR(span_doc,
"span($module, name, /, **attributes)\n--\n\n"
"Open a span: ``with tracer.span(\"prefill.chunk\", engine=\"spec\") as s:``.\n\n"
"Also a decorator (``@tracer.span(\"score.compute\")``). Attribute names with dots are passed\n"
"with ``**{\"chunk.index\": i}``. Disabled: returns the shared NOOP. (The C twin of\n"
"tracer._core._span_py.)");

static PyObject *
span(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (spt.state == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "spectrace.tracer._speedups: install() was not called");
        return NULL;
    }
    if (nargs != 1) {
        if (nargs == 0)
            PyErr_SetString(PyExc_TypeError, "span() missing 1 required positional argument: 'name'");
        else
            PyErr_Format(PyExc_TypeError, "span() takes 1 positional argument but %zd were given", nargs);
        return NULL;
    }
    if (!spt.state->enabled) {
        if (spt_attrs_hold(noop_last_holder, args[0], args + 1, kwnames) < 0)
            return NULL;
        noop_last_window = 0;
        return Py_NewRef(spt.noop);
    }
    PyTypeObject *tp = spt.span_type;
    if (spt.state->gated) {  /* a sampler, suppress() or the profiler mirror is in use */
        PyObject *cur;
        if (PyContextVar_Get(spt.current_var, NULL, &cur) < 0)
            return NULL;
        Py_XDECREF(cur);  /* compared by identity only; UNSAMPLED lives in _state */
        if (cur == spt.unsampled)
            return Py_NewRef(spt.noop);  /* under an unsampled root or in suppress(): as cheap as disabled */
        if (spt.state->mirror != NULL && spt.state->mirror != Py_None)
            tp = spt.mirrored_type;
    }
    SpanCore *s = spt_span_alloc(tp);
    if (s == NULL)
        return NULL;
    if (spt_attrs_hold(s, args[0], args + 1, kwnames) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    s->io = Py_NewRef(spt.empty_io);
    s->transfers = Py_NewRef(spt.empty_transfers);
    return (PyObject *)s;
}

static PyObject *
noop_last(PyObject *module, PyObject *unused)
{
    PyObject *name = noop_last_holder->name ? noop_last_holder->name : Py_None;
    PyObject *attrs = spt_attrs_dict(noop_last_holder);
    if (attrs == NULL)
        return NULL;
    PyObject *r = Py_BuildValue("(OOO)", name, attrs, noop_last_window ? Py_True : Py_False);
    Py_DECREF(attrs);
    return r;
}

static PyObject *
set_noop_last(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "set_noop_last(name, attributes: dict, window)");
        return NULL;
    }
    int window = PyObject_IsTrue(args[2]);
    if (window < 0)
        return NULL;
    spt_attrs_set_dict(noop_last_holder, args[0], args[1]);
    noop_last_window = window;
    Py_RETURN_NONE;
}

/* ---- the module ---- */

static PyObject *
next_span_id(PyObject *module, PyObject *unused)
{
    return PyLong_FromLongLong(++spt.last_span_id);
}

static PyObject *
after_fork(PyObject *module, PyObject *unused)
{
    fork_generation++;  /* the child's thread has a new OS id: look it up again */
    Py_RETURN_NONE;
}

static int
take(PyObject *ns, const char *key, PyObject **slot)
{
    PyObject *v = PyDict_GetItemString(ns, key);  /* borrowed */
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "install() needs %s", key);
        return -1;
    }
    Py_XSETREF(*slot, Py_NewRef(v));
    return 0;
}

static PyObject *
install(PyObject *module, PyObject *ns)
{
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "install() takes a dict of the hot path's Python objects");
        return NULL;
    }
    PyObject *st = NULL, *span_t = NULL, *mirrored_t = NULL;
    if (take(ns, "state", &st) < 0 || take(ns, "current", &spt.current_var) < 0
            || take(ns, "unsampled", &spt.unsampled) < 0 || take(ns, "noop", &spt.noop) < 0
            || take(ns, "span_type", &span_t) < 0 || take(ns, "mirrored_type", &mirrored_t) < 0
            || take(ns, "empty_io", &spt.empty_io) < 0 || take(ns, "empty_transfers", &spt.empty_transfers) < 0
            || take(ns, "enter_py", &spt.enter_py) < 0 || take(ns, "exit_py", &spt.exit_py) < 0
            || take(ns, "finish_py", &spt.finish_py) < 0 || take(ns, "roll_up", &spt.roll_up_py) < 0
            || take(ns, "count_drop", &spt.count_drop_py) < 0
            || take(ns, "internal_error", &spt.internal_error_py) < 0
            || take(ns, "thread_pair", &spt.thread_pair_py) < 0 || take(ns, "perf_counter_ns", &spt.perf_counter_py) < 0)
        goto fail;
    if (!PyObject_TypeCheck(st, &StateCoreType) || !PyContextVar_CheckExact(spt.current_var)
            || !PyType_Check(span_t) || !PyType_IsSubtype((PyTypeObject *)span_t, &SpanCoreType)
            || !PyType_Check(mirrored_t) || !PyType_IsSubtype((PyTypeObject *)mirrored_t, &SpanCoreType)) {
        PyErr_SetString(PyExc_TypeError, "install(): state must be a StateCore, current a ContextVar, "
                        "span_type and mirrored_type SpanCore subclasses");
        goto fail;
    }
    Py_XSETREF(spt.state, (StateCore *)st);
    spt_span_pool_clear();  /* its spans are of the old span_type */
    Py_XSETREF(spt.span_type, (PyTypeObject *)span_t);
    spt_span_type_setup(spt.span_type);
    Py_XSETREF(spt.mirrored_type, (PyTypeObject *)mirrored_t);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(st);
    Py_XDECREF(span_t);
    Py_XDECREF(mirrored_t);
    return NULL;
}

/* set_clock(fn, native): the recorder's clock is fn (tracer._core.perf_counter_ns: a test may put
 * a fake one there); native: fn is time.perf_counter_ns and that is CLOCK_MONOTONIC, so C reads
 * CLOCK_MONOTONIC itself instead of calling fn (tracer/_accel.py decides). */
static PyObject *
set_clock(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyCallable_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "set_clock(fn: callable, native: bool)");
        return NULL;
    }
    int native = PyObject_IsTrue(args[1]);
    if (native < 0)
        return NULL;
#ifndef CLOCK_MONOTONIC
    native = 0;
#endif
    Py_XSETREF(spt.perf_counter_py, Py_NewRef(args[0]));
    spt.native_clock = native;
    return PyBool_FromLong(native);
}

static PyMethodDef module_methods[] = {
    {"span", (PyCFunction)(void (*)(void))span, METH_FASTCALL | METH_KEYWORDS, span_doc},
    {"install", install, METH_O, "install(objects: dict): the Python objects the hot path uses (tracer._core)."},
    {"set_clock", (PyCFunction)(void (*)(void))set_clock, METH_FASTCALL,
     "set_clock(fn, native) -> bool: the recorder's clock; native: read CLOCK_MONOTONIC in C instead."},
    {"next_span_id", next_span_id, METH_NOARGS, "The next span id (one counter for C and Python)."},
    {"after_fork", after_fork, METH_NOARGS, "In a forked child: look the thread's OS id up again."},
    {"noop_last", noop_last, METH_NOARGS, "(name, attributes, window) of the last disabled span()/window()."},
    {"set_noop_last", (PyCFunction)(void (*)(void))set_noop_last, METH_FASTCALL,
     "set_noop_last(name, attributes, window): what window() records when disabled."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "spectrace.tracer._speedups",
    "The tracer's hot path in C (tracer/_speedups.c); tracer/_accel.py chooses it.", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&SpanCoreType) < 0 || PyType_Ready(&StateCoreType) < 0 || spt_add_span_methods() < 0)
        return NULL;
    spt.str_append = PyUnicode_InternFromString("append");
    spt.str_add = PyUnicode_InternFromString("_add");
    spt.str_window_data = PyUnicode_InternFromString("window_data");
    spt.str_chunks = PyUnicode_InternFromString("chunks");
    spt.str_prefill_chunk = PyUnicode_InternFromString("prefill.chunk");
    if (!spt.str_append || !spt.str_add || !spt.str_window_data || !spt.str_chunks || !spt.str_prefill_chunk)
        return NULL;
    noop_last_holder = PyObject_GC_New(SpanCore, &SpanCoreType);
    if (noop_last_holder == NULL)
        return NULL;
    memset((char *)noop_last_holder + sizeof(PyObject), 0, sizeof(SpanCore) - sizeof(PyObject));
    noop_last_holder->name = PyUnicode_FromString("");  /* ("", {}, False) before any call */
    if (noop_last_holder->name == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "SpanCore", (PyObject *)&SpanCoreType) < 0
            || PyModule_AddObjectRef(m, "StateCore", (PyObject *)&StateCoreType) < 0
            || PyModule_AddIntConstant(m, "KW_INLINE", KW_INLINE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

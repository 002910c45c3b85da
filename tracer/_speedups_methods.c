/* SpanCore._enter and _exit for spectrace.tracer._speedups: method descriptors whose bound
 * methods come from a free list (split from _speedups_types.c, which defines SpanCore). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_speedups.h"

/* ---- SpanCore._enter / _exit: method descriptors whose bound methods come from a free list ----
 *
 * `with s:` looks __enter__ and __exit__ up on the type and binds both before calling either
 * (3.11 and 3.12: _PyObject_LookupSpecial), so a builtin method there costs two bound-method
 * objects per span, each malloc'ed, GC-tracked and freed: ~25 ns of a ~290 ns span (perf). These
 * descriptors bind to a SpanBound instead, kept on a small free list (as CPython keeps its own
 * hot objects) and called through vectorcall; and the two lookups of one `with` get the same
 * SpanBound (method_get). They behave as methods otherwise: unbound, ActiveSpan.__enter__(s)
 * calls the descriptor with s first (_FullSpan does that); the type has
 * Py_TPFLAGS_METHOD_DESCRIPTOR, so a call written s.__exit__(...) binds nothing at all. The one
 * difference a caller can see: `e = s.__enter__; x = s.__exit__` (a `with`'s order, by hand)
 * gives one object bound as both, which tells the two calls apart by their arguments (none:
 * __enter__; else __exit__, which wants three), so e(None, None, None) ends the span instead of
 * raising TypeError. A bound GC-tracked object still: a cycle through it is collected. */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;                   /* 0: _enter, 1: _exit */
    PyObject *name;
} SpanMethod;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    SpanCore *span;             /* __self__ (a strong reference) */
    SpanMethod *method;         /* __func__ (a strong reference): the first method it was bound as */
    int kinds;                  /* 1: _enter, 2: _exit, 3: both (see method_get) */
} SpanBound;

static PyTypeObject SpanMethodType, SpanBoundType;

static PyObject *
call_enter(SpanCore *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "__enter__() takes no arguments");
        return NULL;
    }
    return spt_span_enter(s, NULL);
}

static PyObject *
call_exit(SpanCore *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "__exit__() takes no keyword arguments");
        return NULL;
    }
    return spt_span_exit(s, args, nargs);
}

/* A bound _enter takes no arguments, a bound _exit three; one bound as both (a `with`) tells
 * them apart by that. */
static PyObject *
bound_vc(PyObject *o, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SpanBound *b = (SpanBound *)o;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (b->kinds == 1 || (b->kinds == 3 && nargs == 0))
        return call_enter(b->span, args, nargs, kwnames);
    return call_exit(b->span, args, nargs, kwnames);
}

static int
self_check(SpanMethod *m, PyObject *obj)
{
    if (Py_TYPE(obj) == spt.span_type || IS_SPAN(obj))  /* ActiveSpan: no walk of the MRO */
        return 0;
    PyErr_Format(PyExc_TypeError, "descriptor '%U' for 'SpanCore' objects doesn't apply to a '%s' object",
                 m->name, Py_TYPE(obj)->tp_name);
    return -1;
}

/* Unbound: SpanCore._enter(s), ActiveSpan.__exit__(s, None, None, None). */
static PyObject *
method_vc(PyObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "unbound method SpanCore.%U() needs an argument", ((SpanMethod *)m)->name);
        return NULL;
    }
    if (self_check((SpanMethod *)m, args[0]) < 0)
        return NULL;
    return (((SpanMethod *)m)->kind ? call_exit : call_enter)((SpanCore *)args[0], args + 1, nargs - 1, kwnames);
}

/* The free list: the GIL guards it, as it guards CPython's own. Held objects are untracked.
 * last_bound: the bound method made by the latest method_get (borrowed; its dealloc clears it). */
#ifndef Py_GIL_DISABLED
#define BOUND_FREE_MAX 16
static SpanBound *bound_free[BOUND_FREE_MAX];
static int bound_nfree;
static SpanBound *last_bound;
#endif

/* `with s:` binds __enter__ and then at once __exit__ of the same span: the second lookup gets
 * the object the first made (bound as both: bound_vc), one bound method per span instead of two
 * (~6 ns). Any other binding gets an object of its own. */
static PyObject *
method_get(PyObject *m, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(m);
    if (self_check((SpanMethod *)m, obj) < 0)
        return NULL;
    int kind = 1 << ((SpanMethod *)m)->kind;
    SpanBound *b;
#ifndef Py_GIL_DISABLED
    b = last_bound;
    if (b != NULL && b->span == (SpanCore *)obj && b->kinds != kind && b->kinds != 3) {
        b->kinds = 3;
        last_bound = NULL;
        return Py_NewRef(b);
    }
    if (bound_nfree > 0)
        b = (SpanBound *)PyObject_Init((PyObject *)bound_free[--bound_nfree], &SpanBoundType);
    else
#endif
    b = PyObject_GC_New(SpanBound, &SpanBoundType);
    if (b == NULL)
        return NULL;
    b->vectorcall = bound_vc;
    b->span = (SpanCore *)Py_NewRef(obj);
    b->method = (SpanMethod *)Py_NewRef(m);
    b->kinds = kind;
    PyObject_GC_Track(b);
#ifndef Py_GIL_DISABLED
    last_bound = b;
#endif
    return (PyObject *)b;
}

static void
bound_dealloc(SpanBound *b)
{
    PyObject_GC_UnTrack(b);
    SpanCore *s = b->span;
    SpanMethod *m = b->method;
    b->span = NULL;
    b->method = NULL;
#ifndef Py_GIL_DISABLED
    if (last_bound == b)
        last_bound = NULL;
    if (bound_nfree < BOUND_FREE_MAX)
        bound_free[bound_nfree++] = b;
    else
#endif
    PyObject_GC_Del(b);
    Py_XDECREF(m);
    Py_XDECREF(s);  /* last: may end the span's life, which may bind and free methods again */
}

static int
bound_traverse(SpanBound *b, visitproc visit, void *arg)
{
    Py_VISIT(b->span);
    Py_VISIT(b->method);
    return 0;
}

static PyObject *
bound_repr(SpanBound *b)
{
    return PyUnicode_FromFormat("<built-in method %U of %s object at %p>", b->method->name,
                                Py_TYPE(b->span)->tp_name, (void *)b->span);
}

static PyObject *
bound_get_name(SpanBound *b, void *c)
{
    return Py_NewRef(b->method->name);
}

static PyMemberDef bound_members[] = {
    {"__self__", T_OBJECT, offsetof(SpanBound, span), READONLY, NULL},
    {"__func__", T_OBJECT, offsetof(SpanBound, method), READONLY, NULL},
    {NULL},
};

static PyGetSetDef bound_getset[] = {
    {"__name__", (getter)bound_get_name, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject SpanBoundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spectrace.tracer._speedups.SpanBoundMethod",
    .tp_doc = "SpanCore._enter or _exit bound to a span (ActiveSpan.__enter__/__exit__).",
    .tp_basicsize = sizeof(SpanBound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(SpanBound, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)bound_dealloc,
    .tp_traverse = (traverseproc)bound_traverse,
    .tp_repr = (reprfunc)bound_repr,
    .tp_members = bound_members,
    .tp_getset = bound_getset,
};

static void
method_dealloc(SpanMethod *m)  /* never, in practice: SpanCore's dict holds both for good */
{
    Py_XDECREF(m->name);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *
method_repr(SpanMethod *m)
{
    return PyUnicode_FromFormat("<method '%U' of 'SpanCore' objects>", m->name);
}

static PyMemberDef method_members[] = {
    {"__name__", T_OBJECT, offsetof(SpanMethod, name), READONLY, NULL},
    {"__qualname__", T_OBJECT, offsetof(SpanMethod, name), READONLY, NULL},
    {NULL},
};

static PyTypeObject SpanMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spectrace.tracer._speedups.SpanMethod",
    .tp_doc = "SpanCore._enter (ActiveSpan.__enter__) or SpanCore._exit (ActiveSpan.__exit__), C common path.",
    .tp_basicsize = sizeof(SpanMethod),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(SpanMethod, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = method_get,
    .tp_dealloc = (destructor)method_dealloc,
    .tp_repr = (reprfunc)method_repr,
    .tp_members = method_members,
};

/* SpanCore's _enter and _exit (called once, after PyType_Ready(&SpanCoreType)). */
int
spt_add_span_methods(void)
{
    if (PyType_Ready(&SpanMethodType) < 0 || PyType_Ready(&SpanBoundType) < 0)
        return -1;
    static const char *names[2] = {"_enter", "_exit"};
    for (int kind = 0; kind < 2; kind++) {
        SpanMethod *m = PyObject_New(SpanMethod, &SpanMethodType);
        if (m == NULL)
            return -1;
        m->vectorcall = method_vc;
        m->kind = kind;
        m->name = PyUnicode_InternFromString(names[kind]);
        int r = m->name == NULL ? -1 : PyDict_SetItem(SpanCoreType.tp_dict, m->name, (PyObject *)m);
        Py_DECREF(m);
        if (r < 0)
            return -1;
    }
    PyType_Modified(&SpanCoreType);
    return 0;
}

/* The record types of spectrace.tracer._speedups: SpanCore (a span's fields) and StateCore (the
 * STATE fields every span reads). Python subclasses them (tracer._record.Span, _state._State),
 * so every exporter, reader and test reads the same attribute names as with the pure-Python
 * fallback's __slots__. Also what keeps a span's own allocations off the allocator: the
 * _enter/_exit method descriptors, the free list of ended spans and ActiveSpan's dealloc. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_speedups.h"

/* ---- attributes: the call's keywords as passed, a dict when read ---- */

static void
attrs_release(PyObject *attributes, PyObject *kw_names, PyObject **kw_values)
{
    Py_XDECREF(attributes);
    if (kw_names != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kw_names); i++)
            Py_DECREF(kw_values[i]);
        Py_DECREF(kw_names);
    }
}

/* Take the held keywords off s (returns the names, copies the values): the caller releases them
 * once s is consistent again, since a release may run arbitrary code that reads s. */
static PyObject *
kw_detach(SpanCore *s, PyObject **values)
{
    PyObject *names = s->kw_names;
    if (names != NULL)  /* all KW_INLINE (a fixed size: a few moves, not a call to memcpy) */
        memcpy(values, s->kw_values, sizeof(s->kw_values));
    s->kw_names = NULL;
    return names;
}

/* Take name and the keyword arguments of a span() call. */
int
spt_attrs_hold(SpanCore *s, PyObject *name, PyObject *const *values, PyObject *kwnames)
{
    Py_ssize_t n = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *attrs = NULL;
    if (n > KW_INLINE) {  /* many attributes: the dict now */
        attrs = PyDict_New();
        if (attrs == NULL)
            return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (PyDict_SetItem(attrs, PyTuple_GET_ITEM(kwnames, i), values[i]) < 0) {
                Py_DECREF(attrs);
                return -1;
            }
    }
    PyObject *old_name = s->name, *old_attrs = s->attributes, *old_values[KW_INLINE];
    PyObject *old_names = kw_detach(s, old_values);
    s->name = Py_NewRef(name);
    s->attributes = attrs;
    if (n > 0 && n <= KW_INLINE) {
        s->kw_names = Py_NewRef(kwnames);
        for (Py_ssize_t i = 0; i < n; i++)
            s->kw_values[i] = Py_NewRef(values[i]);
    }
    Py_XDECREF(old_name);
    attrs_release(old_attrs, old_names, old_values);
    return 0;
}

/* The attributes dict (a new reference), made from the held keywords on first read. */
PyObject *
spt_attrs_dict(SpanCore *s)
{
    if (s->attributes != NULL)
        return Py_NewRef(s->attributes);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (Py_ssize_t i = 0; s->kw_names != NULL && i < PyTuple_GET_SIZE(s->kw_names); i++)
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(s->kw_names, i), s->kw_values[i]) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    PyObject *values[KW_INLINE];
    PyObject *names = kw_detach(s, values);
    s->attributes = Py_NewRef(d);
    attrs_release(NULL, names, values);
    return d;
}

void
spt_attrs_set_dict(SpanCore *s, PyObject *name, PyObject *dict)
{
    PyObject *old_name = s->name, *old_attrs = s->attributes, *old_values[KW_INLINE];
    PyObject *old_names = kw_detach(s, old_values);
    s->name = Py_NewRef(name);
    s->attributes = Py_NewRef(dict);
    Py_XDECREF(old_name);
    attrs_release(old_attrs, old_names, old_values);
}

static PyObject *
span_get_attributes(SpanCore *self, void *closure)
{
    return spt_attrs_dict(self);
}

static int
span_set_attributes(SpanCore *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a span's attributes cannot be deleted");
        return -1;
    }
    PyObject *name = self->name ? self->name : Py_None;
    Py_INCREF(name);
    spt_attrs_set_dict(self, name, value);
    Py_DECREF(name);
    return 0;
}

/* ---- SpanCore ---- */

static int
span_traverse(SpanCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->name);
    Py_VISIT(self->attributes);
    if (self->kw_names != NULL) {
        Py_VISIT(self->kw_names);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->kw_names); i++)
            Py_VISIT(self->kw_values[i]);
    }
    Py_VISIT(self->io);
    Py_VISIT(self->transfers);
    Py_VISIT(self->token);
    Py_VISIT(self->parent);
    Py_VISIT(self->window);
    Py_VISIT(self->thread_id);
    Py_VISIT(self->thread_name);
    return 0;
}

static int
span_clear(SpanCore *self)
{
    PyObject *values[KW_INLINE];
    PyObject *names = kw_detach(self, values);
    attrs_release(NULL, names, values);
    Py_CLEAR(self->name);
    Py_CLEAR(self->attributes);
    Py_CLEAR(self->io);
    Py_CLEAR(self->transfers);
    Py_CLEAR(self->token);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->window);
    Py_CLEAR(self->thread_id);
    Py_CLEAR(self->thread_name);
    return 0;
}

/* ---- the free list of ended spans ----
 *
 * An ActiveSpan made by span() and freed goes back to a short list instead of to the allocator,
 * and span() takes it from there: a malloc, a free, a GC link and a memset less per span
 * (CPython keeps its hottest objects the same way). Only spans made by span() (`pooled`) of type
 * spt.span_type go there: the memory CPython keeps before such an object (3.11/3.12: the managed
 * __dict__ pointers) was zeroed by tp_alloc, and is zero again once the dealloc has dropped a
 * __dict__ (a span made by object.__new__ may hold inline values there: never pooled). 3.13
 * keeps instance values differently, and without the GIL nothing guards the list: no list there. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000 && !defined(Py_GIL_DISABLED)
#define SPAN_POOL_MAX 64
static SpanCore *span_pool[SPAN_POOL_MAX];
static int span_pool_n;
#endif

SpanCore *
spt_span_alloc(PyTypeObject *tp)
{
    SpanCore *s;
#ifdef SPAN_POOL_MAX
    if (span_pool_n > 0 && tp == spt.span_type) {
        s = span_pool[--span_pool_n];
        /* Its objects are NULL already (span_clear; the subclass's __slots__ and __dict__ were
         * cleared by its dealloc; kw_values are read only under kw_names): only the numbers
         * are left to zero (a memset of the whole object cost ~10 ns: `rep stos`). */
        s->span_id = s->start_ns = s->end_ns = 0;
        PyObject_Init((PyObject *)s, tp);  /* a reference to tp, as tp_alloc takes for a heap type */
        PyObject_GC_Track(s);
        s->pooled = 1;
        return s;
    }
#endif
    if ((s = (SpanCore *)tp->tp_alloc(tp, 0)) == NULL)
        return NULL;
#ifdef SPAN_POOL_MAX
    s->pooled = tp == spt.span_type;
#endif
    return s;
}

void
spt_span_pool_clear(void)
{
#ifdef SPAN_POOL_MAX
    while (span_pool_n > 0)
        PyObject_GC_Del(span_pool[--span_pool_n]);
#endif
}

/* Free s's memory (its fields are cleared), or keep it for span(). */
static inline void
span_free_or_keep(SpanCore *s)
{
#ifdef SPAN_POOL_MAX
    if (s->pooled && span_pool_n < SPAN_POOL_MAX && Py_TYPE(s) == spt.span_type) {
        span_pool[span_pool_n++] = s;
        return;
    }
#endif
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* tp_dealloc, and the base dealloc of a Python subclass that span_type_dealloc does not serve
 * (subtype_dealloc calls it last, then drops its reference to the type). */
static void
span_dealloc(SpanCore *self)
{
    PyObject_GC_UnTrack(self);
    span_clear(self);
    span_free_or_keep(self);
}

/* ---- ActiveSpan's own tp_dealloc ----
 *
 * A Python subclass's instances are freed by CPython's subtype_dealloc: it looks for finalizers,
 * weak references, slots and a __dict__ along the class chain, untracks and re-tracks the object,
 * then calls SpanCore's dealloc (~12 ns a span, perf). install() gives ActiveSpan this dealloc
 * instead, when the classes between it and SpanCore add nothing it does not handle here (no
 * finalizer, no weak references: checked; their __slots__ and the __dict__ are cleared as
 * subtype_dealloc clears them). Subclasses (windows, mirrored spans) keep subtype_dealloc, which
 * stops at ActiveSpan and calls this as their base dealloc (then the type's reference is ours to
 * drop, as for any heap base). 3.11 and 3.12 only (the managed __dict__ is found through
 * _PyObject_GetDictPtr). */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000 && !defined(Py_GIL_DISABLED)
#define SPAN_TYPE_DEALLOC 1

/* Clear the __slots__ of the Python classes from t up to SpanCore (subtype_dealloc's clear_slots). */
static void
clear_python_slots(PyTypeObject *t, PyObject *self)
{
    for (; t != NULL && t != &SpanCoreType && (t->tp_flags & Py_TPFLAGS_HEAPTYPE); t = t->tp_base) {
        PyMemberDef *mp = t->tp_members;
        for (Py_ssize_t i = 0, n = Py_SIZE(t); i < n; i++, mp++)
            if (mp->type == T_OBJECT_EX && !(mp->flags & READONLY))
                Py_CLEAR(*(PyObject **)((char *)self + mp->offset));
    }
}

static void
span_type_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, span_type_dealloc)
    PyTypeObject *own = tp;  /* the class whose tp_dealloc this is */
    if (tp->tp_dealloc == span_type_dealloc) {  /* an ActiveSpan itself (else a subclass's base dealloc) */
        if (tp->tp_finalize != NULL) {  /* a __del__ given to the class later */
            PyObject_GC_Track(self);
            if (PyObject_CallFinalizerFromDealloc(self) < 0)
                goto done;  /* resurrected */
            PyObject_GC_UnTrack(self);
        }
        if ((tp->tp_flags & Py_TPFLAGS_MANAGED_DICT) || tp->tp_dictoffset) {
            PyObject **dictptr;
            if (((SpanCore *)self)->pooled)  /* made by span(): a dict or nothing, never inline values */
                dictptr = _PyObject_GetDictPtr(self);
            else {  /* object.__new__ may have given it inline values: made into a dict here */
                PyObject *et, *ev, *etb;
                PyErr_Fetch(&et, &ev, &etb);
                dictptr = _PyObject_GetDictPtr(self);
                PyErr_Restore(et, ev, etb);
            }
            if (dictptr != NULL)
                Py_CLEAR(*dictptr);
        }
    }
    else
        while (own->tp_dealloc != span_type_dealloc)
            own = own->tp_base;
    clear_python_slots(own, self);
    span_clear((SpanCore *)self);
    span_free_or_keep((SpanCore *)self);
    Py_DECREF(tp);
done:
    Py_TRASHCAN_END
}
#endif

void
spt_span_type_setup(PyTypeObject *tp)
{
#ifdef SPAN_TYPE_DEALLOC
    if (tp->tp_dealloc == span_type_dealloc || tp->tp_itemsize)
        return;
    for (PyTypeObject *t = tp; t != &SpanCoreType; t = t->tp_base)
        if (t == NULL || !(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_dealloc != tp->tp_dealloc
                || t->tp_finalize != NULL || t->tp_del != NULL || t->tp_weaklistoffset != 0)
            return;  /* not the plain __slots__ classes this handles: subtype_dealloc stays */
    tp->tp_dealloc = span_type_dealloc;
#endif
}

static PyMemberDef span_members[] = {
    {"span_id", T_LONGLONG, offsetof(SpanCore, span_id), 0, NULL},
    {"start_ns", T_LONGLONG, offsetof(SpanCore, start_ns), 0, NULL},
    {"end_ns", T_LONGLONG, offsetof(SpanCore, end_ns), 0, NULL},
    {"name", T_OBJECT, offsetof(SpanCore, name), 0, NULL},
    {"io", T_OBJECT, offsetof(SpanCore, io), 0, NULL},
    {"transfers", T_OBJECT, offsetof(SpanCore, transfers), 0, NULL},
    {"_token", T_OBJECT, offsetof(SpanCore, token), 0, NULL},
    {"_parent", T_OBJECT, offsetof(SpanCore, parent), 0, NULL},
    {"_window", T_OBJECT, offsetof(SpanCore, window), 0, NULL},
    {"thread_id", T_OBJECT, offsetof(SpanCore, thread_id), 0, NULL},
    {"thread_name", T_OBJECT, offsetof(SpanCore, thread_name), 0, NULL},
    {NULL},
};

static PyGetSetDef span_getset[] = {
    {"attributes", (getter)span_get_attributes, (setter)span_set_attributes,
     "The span's attributes (a dict, made from the span() call's keywords when first read).", NULL},
    {NULL},
};

PyTypeObject SpanCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spectrace.tracer._speedups.SpanCore",
    .tp_doc = "A span's fields (tracer._record.Span's base when the C hot path is used).",
    .tp_basicsize = sizeof(SpanCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)span_dealloc,
    .tp_traverse = (traverseproc)span_traverse,
    .tp_clear = (inquiry)span_clear,
    .tp_members = span_members,
    .tp_getset = span_getset,
};

/* ---- StateCore ---- */

#define FLAG(field)                                                                  \
    static PyObject *state_get_##field(StateCore *self, void *c)                     \
    {                                                                                \
        return PyBool_FromLong(self->field);                                         \
    }                                                                                \
    static int state_set_##field(StateCore *self, PyObject *v, void *c)              \
    {                                                                                \
        int b = v == NULL ? (PyErr_SetString(PyExc_AttributeError, #field " cannot be deleted"), -1) \
                          : PyObject_IsTrue(v);                                      \
        if (b < 0)                                                                   \
            return -1;                                                               \
        self->field = (char)b;                                                       \
        return 0;                                                                    \
    }
FLAG(enabled)
FLAG(gated)
FLAG(exporting)

static PyGetSetDef state_getset[] = {
    {"enabled", (getter)state_get_enabled, (setter)state_set_enabled, "Spans and transfers are recorded.", NULL},
    {"gated", (getter)state_get_gated, (setter)state_set_gated,
     "A sampler, suppress() or the mirror is in use: span() looks at the context.", NULL},
    {"exporting", (getter)state_get_exporting, (setter)state_set_exporting,
     "An exporter consumes pending.", NULL},
    {NULL},
};

static PyMemberDef state_members[] = {
    {"max_spans", T_PYSSIZET, offsetof(StateCore, max_spans), 0, NULL},
    {"offered", T_LONGLONG, offsetof(StateCore, offered), 0, NULL},
    {"unexported", T_LONGLONG, offsetof(StateCore, unexported), 0, NULL},
    {"dropped", T_LONGLONG, offsetof(StateCore, dropped), 0, NULL},
    {"captures", T_OBJECT, offsetof(StateCore, captures), 0, NULL},
    {"pending", T_OBJECT, offsetof(StateCore, pending), 0, NULL},
    {"on_root_start", T_OBJECT, offsetof(StateCore, on_root_start), 0, NULL},
    {"on_root_end", T_OBJECT, offsetof(StateCore, on_root_end), 0, NULL},
    {"_mirror", T_OBJECT, offsetof(StateCore, mirror), 0, NULL},
    {NULL},
};

static int
state_traverse(StateCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->captures);
    Py_VISIT(self->pending);
    Py_VISIT(self->on_root_start);
    Py_VISIT(self->on_root_end);
    Py_VISIT(self->mirror);
    return 0;
}

static int
state_clear(StateCore *self)
{
    Py_CLEAR(self->captures);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->on_root_start);
    Py_CLEAR(self->on_root_end);
    Py_CLEAR(self->mirror);
    return 0;
}

static void
state_dealloc(StateCore *self)
{
    PyObject_GC_UnTrack(self);
    state_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject StateCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spectrace.tracer._speedups.StateCore",
    .tp_doc = "The STATE fields every span reads (tracer._state._State's base when the C hot path is used).",
    .tp_basicsize = sizeof(StateCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)state_dealloc,
    .tp_traverse = (traverseproc)state_traverse,
    .tp_clear = (inquiry)state_clear,
    .tp_members = state_members,
    .tp_getset = state_getset,
};

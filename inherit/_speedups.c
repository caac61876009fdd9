/* inherit._speedups: compiled fast paths that mirror inherit/_runtime.py.
 *
 * The pure-Python runtime is the reference; this module only does the same
 * checks faster:
 *   - generation(): one byte read of the wipe-on-fork flag page (or one PID
 *     compare with the getpid backend), returning the generation object the
 *     runtime published;
 *   - ForkLocalBase: a base type whose attribute hooks check the flag and the
 *     instance's stamp, then use the generic lookup;
 *   - method descriptors for Random.random/getrandbits that check before the
 *     Mersenne Twister draws;
 *   - CachedFunction: the per_process_cache wrapper, a vectorcall object.
 * Every slow path calls back into the Python runtime, which owns all state.
 *
 * The state is process-wide, so the module loads in the main interpreter only
 * (a subinterpreter has its own flag page) and not on free-threaded builds;
 * there the pure-Python implementation runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

/* Member types: public in Python.h from 3.12; structmember.h's old names before. */
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

/* -- state published by the runtime ---------------------------------------------------------- */

enum { MODE_NONE = 0, MODE_KERNEL = 1, MODE_GETPID = 2 };

static int mode = MODE_NONE;
static const volatile unsigned char *flag = NULL; /* the wipe-on-fork flag byte */
static Py_buffer flag_view;                       /* keeps the flag page exported */
static PyObject *current_generation = NULL;       /* the int the runtime published */
static long pid_of_record = -1;
static PyObject *slow_generation = NULL;          /* _runtime._detect */
static PyObject *make_current = NULL;             /* _runtime._make_current */
static PyObject *str_renew = NULL;                /* "_renew" */
static PyObject *str_stamp = NULL;                /* "_inherit_stamp" */
static PyObject *c_random = NULL;                 /* _random.Random.random */
static PyObject *c_getrandbits = NULL;            /* _random.Random.getrandbits */
static PyObject *pure_random = NULL;              /* the pure-Python Random.random */
static PyObject *pure_getrandbits = NULL;         /* the pure-Python Random.getrandbits */
static PyCFunction c_random_noargs = NULL;        /* _random.Random.random's C function */
static PyCFunction c_getrandbits_o = NULL;        /* _random.Random.getrandbits's C function */
/* Restore detection: vmclock's 8-byte VM generation counter, and its bytes when the
   state was published. NULL when there is no device: then nothing is compared. */
static const volatile unsigned char *vm_counter = NULL;
static Py_buffer vm_view;
static unsigned char vm_last[8];

/* True if the published state belongs to this process. */
static inline int
same_machine(void)
{
    /* A difference sends the caller to the runtime's slow path, which reads the
       counter under vmclock's sequence lock and decides. */
    return vm_counter == NULL || memcmp((const void *)vm_counter, vm_last, 8) == 0;
}

static inline int
published(void)
{
    if (mode == MODE_KERNEL) {
        return *flag != 0 && same_machine();
    }
    if (mode == MODE_GETPID) {
        return (long)getpid() == pid_of_record && same_machine();
    }
    return 0;
}

static PyObject *
generation(PyObject *module, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    /* METH_FASTCALL, not METH_NOARGS: CPython 3.11+ specializes calls to fast builtins.
       The errors are word for word the pure-Python function's. */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_Format(PyExc_TypeError, "generation() got an unexpected keyword argument '%U'",
                     PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    if (nargs != 0) {
        PyErr_Format(PyExc_TypeError, "generation() takes 0 positional arguments but %zd %s given", nargs,
                     nargs == 1 ? "was" : "were");
        return NULL;
    }
    if (published() && current_generation != NULL) {
        return Py_NewRef(current_generation);
    }
    if (slow_generation == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "inherit._speedups is not wired to inherit._runtime");
        return NULL;
    }
    return PyObject_CallNoArgs(slow_generation);
}

static PyObject *
install(PyObject *module, PyObject *args)
{
    PyObject *page, *detect, *renew;
    int new_mode;
    if (!PyArg_ParseTuple(args, "OiOO:install", &page, &new_mode, &detect, &renew)) {
        return NULL;
    }
    if (new_mode != MODE_KERNEL && new_mode != MODE_GETPID) {
        PyErr_SetString(PyExc_ValueError, "mode must be 1 (kernel) or 2 (getpid)");
        return NULL;
    }
    if (new_mode == MODE_KERNEL) {
        /* The new view first: a refused page leaves the current one in place. */
        Py_buffer view;
        if (PyObject_GetBuffer(page, &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        if (view.len < 1) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "the flag page is empty");
            return NULL;
        }
        mode = MODE_NONE; /* no fast path reads the old page while it is swapped */
        if (flag_view.obj != NULL) {
            PyBuffer_Release(&flag_view);
        }
        flag_view = view;
        flag = (const volatile unsigned char *)flag_view.buf;
    }
    Py_XSETREF(slow_generation, Py_NewRef(detect));
    Py_XSETREF(make_current, Py_NewRef(renew));
    mode = new_mode;
    Py_RETURN_NONE;
}

static PyObject *
set_detector(PyObject *module, PyObject *args)
{
    PyObject *detect, *renew;
    if (!PyArg_ParseTuple(args, "OO:set_detector", &detect, &renew)) {
        return NULL;
    }
    Py_XSETREF(slow_generation, Py_NewRef(detect));
    Py_XSETREF(make_current, Py_NewRef(renew));
    Py_RETURN_NONE;
}

static PyObject *
set_vmclock(PyObject *module, PyObject *counter)
{
    if (counter == Py_None) {
        vm_counter = NULL;
        if (vm_view.obj != NULL) {
            PyBuffer_Release(&vm_view);
        }
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(counter, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len != 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "the VM generation counter is 8 bytes");
        return NULL;
    }
    memcpy(vm_last, view.buf, 8);
    vm_counter = NULL; /* no fast path reads the old view while it is swapped */
    if (vm_view.obj != NULL) {
        PyBuffer_Release(&vm_view);
    }
    vm_view = view;
    vm_counter = (const volatile unsigned char *)vm_view.buf;
    Py_RETURN_NONE;
}

static PyObject *
publish(PyObject *module, PyObject *args)
{
    PyObject *gen, *last = Py_None;
    long pid;
    if (!PyArg_ParseTuple(args, "Ol|O:publish", &gen, &pid, &last)) {
        return NULL;
    }
    if (last != Py_None && (!PyBytes_Check(last) || PyBytes_GET_SIZE(last) != 8)) {
        PyErr_SetString(PyExc_TypeError, "the counter's bytes must be 8 bytes or None");
        return NULL;
    }
    /* Called before the runtime sets the flag byte (or its own PID of record),
       so a fast path that sees the flag also sees this generation; the counter's
       bytes after the generation, for the same reason on a restore. */
    Py_XSETREF(current_generation, Py_NewRef(gen));
    pid_of_record = pid;
    if (last != Py_None) {
        memcpy(vm_last, PyBytes_AS_STRING(last), 8);
    }
    Py_RETURN_NONE;
}

/* -- ForkLocalBase --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *weakreflist;
    PyObject *stamp; /* the generation this instance's attributes belong to */
    PyObject *args;  /* (args, kwargs) its __init__ was called with */
} ForkLocalObject;

static inline int
forklocal_current(ForkLocalObject *self)
{
    return published() && self->stamp == current_generation;
}

static int
forklocal_renew(PyObject *self)
{
    if (make_current == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "inherit._speedups is not wired to inherit._runtime");
        return -1;
    }
    PyObject *res = PyObject_CallOneArg(make_current, self);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

static PyObject *
forklocal_getattro(PyObject *self, PyObject *name)
{
    if (!forklocal_current((ForkLocalObject *)self) && forklocal_renew(self) < 0) {
        return NULL;
    }
    return PyObject_GenericGetAttr(self, name);
}

static int
forklocal_setattro(PyObject *self, PyObject *name, PyObject *value)
{
    if (!forklocal_current((ForkLocalObject *)self) && forklocal_renew(self) < 0) {
        return -1;
    }
    return PyObject_GenericSetAttr(self, name, value);
}

static int
forklocal_traverse(ForkLocalObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    Py_VISIT(self->stamp);
    Py_VISIT(self->args);
    return 0;
}

static int
forklocal_clear(ForkLocalObject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->stamp);
    Py_CLEAR(self->args);
    return 0;
}

static void
forklocal_dealloc(ForkLocalObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    forklocal_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef forklocal_members[] = {
    {"_forklocal_stamp", Py_T_OBJECT_EX, offsetof(ForkLocalObject, stamp), 0, NULL},
    {"_forklocal_args", Py_T_OBJECT_EX, offsetof(ForkLocalObject, args), 0, NULL},
    {"__dictoffset__", Py_T_PYSSIZET, offsetof(ForkLocalObject, dict), Py_READONLY, NULL},
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(ForkLocalObject, weakreflist), Py_READONLY, NULL},
    {NULL},
};

static PyGetSetDef forklocal_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyType_Slot forklocal_slots[] = {
    {Py_tp_dealloc, forklocal_dealloc},
    {Py_tp_traverse, forklocal_traverse},
    {Py_tp_clear, forklocal_clear},
    {Py_tp_getattro, forklocal_getattro},
    {Py_tp_setattro, forklocal_setattro},
    {Py_tp_members, forklocal_members},
    {Py_tp_getset, forklocal_getset},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "The compiled base of inherit.ForkLocal (fast attribute hooks)."},
    {0, NULL},
};

static PyType_Spec forklocal_spec = {
    .name = "inherit._speedups.ForkLocalBase",
    .basicsize = sizeof(ForkLocalObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = forklocal_slots,
};

/* -- Random's drawing methods ------------------------------------------------------------------ */

static inline int
random_current(PyObject *self)
{
    if (!published()) {
        return 0;
    }
    PyObject *stamp = PyObject_GetAttr(self, str_stamp);
    if (stamp == NULL) {
        PyErr_Clear();
        return 0;
    }
    int current = stamp == current_generation;
    Py_DECREF(stamp);
    return current;
}

static int
random_renew(PyObject *self)
{
    PyObject *res = PyObject_CallMethodNoArgs(self, str_renew);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* Wrong arguments: the pure-Python method raises its own error, so the messages match. */
static PyObject *
delegate(PyObject *pure, PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject **all = PyMem_Malloc((size_t)(1 + nargs + nkw) * sizeof(PyObject *));
    if (all == NULL) {
        return PyErr_NoMemory();
    }
    all[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        all[1 + i] = args[i];
    }
    PyObject *res = PyObject_Vectorcall(pure, all, (size_t)(1 + nargs), kwnames);
    PyMem_Free(all);
    return res;
}

static PyObject *
random_random(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || kwnames != NULL) {
        return delegate(pure_random, self, args, (size_t)nargs, kwnames);
    }
    if (!random_current(self) && random_renew(self) < 0) {
        return NULL;
    }
    if (c_random_noargs != NULL) { /* self is an instance of a subclass: the descriptor checked */
        return c_random_noargs(self, NULL);
    }
    return PyObject_Vectorcall(c_random, &self, 1, NULL);
}

static PyObject *
random_getrandbits(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 1 || kwnames != NULL) {
        return delegate(pure_getrandbits, self, args, (size_t)nargs, kwnames);
    }
    if (!random_current(self) && random_renew(self) < 0) {
        return NULL;
    }
    if (c_getrandbits_o != NULL) {
        return c_getrandbits_o(self, args[0]);
    }
    PyObject *call[2] = {self, args[0]};
    return PyObject_Vectorcall(c_getrandbits, call, 2, NULL);
}

static PyMethodDef random_defs[] = {
    {"random", (PyCFunction)(void (*)(void))random_random, METH_FASTCALL | METH_KEYWORDS,
     "random() -> x in the interval [0, 1), reseeding first in a new process."},
    {"getrandbits", (PyCFunction)(void (*)(void))random_getrandbits, METH_FASTCALL | METH_KEYWORDS,
     "getrandbits(k) -> x, an int with k random bits, reseeding first in a new process."},
};

static PyObject *
random_methods(PyObject *module, PyObject *args)
{
    /* Method descriptors on inherit.Random, so CPython calls them without building a
       bound method, like the C methods of _random.Random they wrap. */
    PyObject *cls, *base, *pure_r, *pure_g;
    if (!PyArg_ParseTuple(args, "O!O!OO:random_methods", &PyType_Type, &cls, &PyType_Type, &base, &pure_r,
                          &pure_g)) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)base)) {
        PyErr_SetString(PyExc_TypeError, "random_methods() needs a subclass of _random.Random");
        return NULL;
    }
    PyObject *random = PyObject_GetAttrString(base, "random");
    PyObject *getrandbits = PyObject_GetAttrString(base, "getrandbits");
    if (random == NULL || getrandbits == NULL) {
        Py_XDECREF(random);
        Py_XDECREF(getrandbits);
        return NULL;
    }
    Py_XSETREF(c_random, random);
    Py_XSETREF(c_getrandbits, getrandbits);
    /* Their C functions, called directly where the calling convention is known. */
    c_random_noargs = c_getrandbits_o = NULL;
    if (Py_IS_TYPE(random, &PyMethodDescr_Type)) {
        PyMethodDef *def = ((PyMethodDescrObject *)random)->d_method;
        if ((def->ml_flags & ~METH_COEXIST) == METH_NOARGS) {
            c_random_noargs = def->ml_meth;
        }
    }
    if (Py_IS_TYPE(getrandbits, &PyMethodDescr_Type)) {
        PyMethodDef *def = ((PyMethodDescrObject *)getrandbits)->d_method;
        if ((def->ml_flags & ~METH_COEXIST) == METH_O) {
            c_getrandbits_o = def->ml_meth;
        }
    }
    Py_XSETREF(pure_random, Py_NewRef(pure_r));
    Py_XSETREF(pure_getrandbits, Py_NewRef(pure_g));
    PyObject *r = PyDescr_NewMethod((PyTypeObject *)cls, &random_defs[0]);
    PyObject *g = PyDescr_NewMethod((PyTypeObject *)cls, &random_defs[1]);
    if (r == NULL || g == NULL) {
        Py_XDECREF(r);
        Py_XDECREF(g);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, r, g);
    Py_DECREF(r);
    Py_DECREF(g);
    return pair;
}

/* -- CachedFunction: per_process_cache's wrapper -------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *cached;  /* the lru_cache of this process */
    PyObject *stamp;   /* the generation it belongs to */
    PyObject *renew;   /* callable(self): replaces cached and stamp */
    vectorcallfunc vectorcall;
} CachedObject;

static PyObject *
cached_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CachedObject *self = (CachedObject *)op;
    if (!(published() && self->stamp == current_generation)) {
        PyObject *res = PyObject_CallOneArg(self->renew, op);
        if (res == NULL) {
            return NULL;
        }
        Py_DECREF(res);
    }
    if (self->cached == NULL) {
        PyErr_SetString(PyExc_TypeError, "this per_process_cache wrapper has no cache (its _cached was deleted)");
        return NULL;
    }
    return PyObject_Vectorcall(self->cached, args, nargsf, kwnames);
}

static PyObject *
cached_reduce(PyObject *self, PyObject *unused)
{
    /* Pickled by reference, like the function it wraps (and like lru_cache's wrapper). */
    return PyObject_GetAttrString(self, "__qualname__");
}

static PyObject *
cached_repr(PyObject *self)
{
    /* The way the pure implementation's wrapper (a function) shows itself. */
    PyObject *qualname = PyObject_GetAttrString(self, "__qualname__");
    if (qualname == NULL) {
        return NULL;
    }
    PyObject *repr = PyUnicode_FromFormat("<function %S at %p>", qualname, self);
    Py_DECREF(qualname);
    return repr;
}

static PyMethodDef cached_methods[] = {
    {"__reduce__", cached_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyObject *
cached_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *cached, *stamp, *renew;
    if (!PyArg_ParseTuple(args, "OOO:CachedFunction", &cached, &stamp, &renew)) {
        return NULL;
    }
    CachedObject *self = (CachedObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->cached = Py_NewRef(cached);
    self->stamp = Py_NewRef(stamp);
    self->renew = Py_NewRef(renew);
    self->vectorcall = cached_vectorcall;
    return (PyObject *)self;
}

static PyObject *
cached_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static int
cached_traverse(CachedObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    Py_VISIT(self->cached);
    Py_VISIT(self->stamp);
    Py_VISIT(self->renew);
    return 0;
}

static int
cached_clear(CachedObject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->cached);
    Py_CLEAR(self->stamp);
    Py_CLEAR(self->renew);
    return 0;
}

static void
cached_dealloc(CachedObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    cached_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef cached_members[] = {
    {"_cached", Py_T_OBJECT_EX, offsetof(CachedObject, cached), 0, NULL},
    {"_stamp", Py_T_OBJECT_EX, offsetof(CachedObject, stamp), 0, NULL},
    {"__dictoffset__", Py_T_PYSSIZET, offsetof(CachedObject, dict), Py_READONLY, NULL},
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(CachedObject, vectorcall), Py_READONLY, NULL},
    {NULL},
};

static PyGetSetDef cached_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyType_Slot cached_slots[] = {
    {Py_tp_dealloc, cached_dealloc},
    {Py_tp_traverse, cached_traverse},
    {Py_tp_clear, cached_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, cached_descr_get},
    {Py_tp_members, cached_members},
    {Py_tp_methods, cached_methods},
    {Py_tp_repr, cached_repr},
    {Py_tp_getset, cached_getset},
    {Py_tp_new, cached_new},
    {Py_tp_doc, "A per_process_cache wrapper (compiled)."},
    {0, NULL},
};

static PyType_Spec cached_spec = {
    .name = "inherit._speedups.CachedFunction",
    .basicsize = sizeof(CachedObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .slots = cached_slots,
};

/* -- module ------------------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"generation", (PyCFunction)(void (*)(void))generation, METH_FASTCALL | METH_KEYWORDS,
     "A number that differs in every new process and is stable within one (compiled fast path)."},
    {"set_vmclock", set_vmclock, METH_O, "set_vmclock(counter or None): compare vmclock's counter too."},
    {"install", install, METH_VARARGS, "install(page, mode, detect, make_current): wire the fast paths."},
    {"set_detector", set_detector, METH_VARARGS, "set_detector(detect, make_current)."},
    {"publish", publish, METH_VARARGS, "publish(generation, pid[, counter bytes]): the state of this process."},
    {"random_methods", random_methods, METH_VARARGS,
     "random_methods(Random, _random.Random, pure_random, pure_getrandbits) -> (random, getrandbits)."},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *module)
{
#ifdef Py_GIL_DISABLED
    PyErr_SetString(PyExc_ImportError, "inherit._speedups is not used on free-threaded builds");
    return -1;
#endif
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_ImportError, "inherit._speedups loads in the main interpreter only");
        return -1;
    }
    if (str_renew == NULL) {
        str_renew = PyUnicode_InternFromString("_renew");
        str_stamp = PyUnicode_InternFromString("_inherit_stamp");
        if (str_renew == NULL || str_stamp == NULL) {
            return -1;
        }
    }
    PyObject *forklocal = PyType_FromSpec(&forklocal_spec);
    int failed = forklocal == NULL || PyModule_AddObjectRef(module, "ForkLocalBase", forklocal) < 0;
    Py_XDECREF(forklocal);
    if (failed) {
        return -1;
    }
    PyObject *cached = PyType_FromSpec(&cached_spec);
    failed = cached == NULL || PyModule_AddObjectRef(module, "CachedFunction", cached) < 0;
    Py_XDECREF(cached);
    return failed ? -1 : 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "inherit._speedups",
    .m_doc = "Compiled fast paths mirroring inherit._runtime (optional).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}

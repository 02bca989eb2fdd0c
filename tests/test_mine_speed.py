"""Per-sample MINE engine speed invariants: no per-step large allocations, sub-batches equal the whole batch."""

from __future__ import annotations

import multiprocessing
import resource

import pytest
import torch

from uae_augment.mine import BlockAdam, PerSampleMINE, Workspace, per_sample, sub_batch_rows

PAGE_BYTES = resource.getpagesize()


@pytest.fixture
def threads():
    """Sets the torch thread count for one test and restores it afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _mine(batch: int, shape: tuple[int, ...], count: int, **kwargs) -> PerSampleMINE:
    return PerSampleMINE(
        shape,
        seed=3,
        index=torch.arange(10, 10 + batch),
        count=count,
        lr=1e-3,
        **{"hidden": None, **kwargs},
    )


def test_mine_iterations_allocate_no_large_temporaries(threads):
    # B = 64 samples of K = 16 maps 28 x 28: every (B, K, F) temporary is 48 MB, above
    # glibc's largest mmap threshold, so an engine that allocates them per step page-faults
    # ~12k pages per temporary
    threads(1)
    mine = _mine(64, (28, 28), 16)
    u, v = torch.rand(64, 16, 28, 28), torch.rand(64, 16, 28, 28)
    temporary_pages = 64 * 16 * mine.network.features * 4 // PAGE_BYTES

    def delta_step() -> torch.Tensor:
        v_step = v.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mine.attack_estimate(u, v_step).sum(), v_step)
        return v_step.detach() - 1e-3 * grad

    mine.train(u, delta_step(), 2)  # first touch of parameters, gradients, Adam moments and workspace
    moved = delta_step()
    before = _page_faults()
    mine.train(u, moved, 2)
    train_faults = _page_faults() - before
    assert train_faults < temporary_pages // 4, (
        f"{train_faults} page faults in 2 MINE steps (one temporary: {temporary_pages})"
    )


@pytest.mark.parametrize("batch", [1, 5, 16, 21])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_sub_batches_equal_the_whole_batch_bitwise(threads, batch, num_threads):
    # every sub-batch trains with single-threaded operations (several at once with several
    # threads), so 1-row, odd and full sub-batches give the whole batch's bits at 1 and 2 threads
    threads(1)
    u, v = torch.rand(batch, 7, 6, 5), torch.rand(batch, 7, 6, 5)
    whole = _mine(batch, (6, 5), 7, sub_batch=batch)
    expected = whole.train(u, v, 3)
    threads(num_threads)
    permutation = torch.stack([torch.randperm(7) for _ in range(batch)])
    for rows in (1, 3, 8, 16):
        parted = _mine(batch, (6, 5), 7, sub_batch=rows)
        assert len(parted.sub_batches) == -(-batch // rows)
        last = parted.train(u, v, 3)
        assert torch.get_num_threads() == num_threads  # restored after the single-threaded steps
        for (name, a), b in zip(whole.network.named_parameters(), parted.network.parameters()):
            assert torch.equal(a, b), (name, rows)
        assert torch.equal(last, expected)
        estimate = parted.estimate(u, v, permutation)  # at num_threads, like the training steps
        estimate_grad = _attack_gradient(parted, u, v, permutation)
        threads(1)
        assert torch.equal(estimate, whole.estimate(u, v, permutation))
        assert torch.equal(estimate_grad, _attack_gradient(whole, u, v, permutation))
        threads(num_threads)


def _attack_gradient(mine: PerSampleMINE, u: torch.Tensor, v: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    v = v.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mine.attack_estimate(u, v, permutation).sum(), v)
    return grad


@pytest.mark.parametrize("shape", [(6, 5), (9,)])
@pytest.mark.parametrize("hidden", [None, 12])
@pytest.mark.parametrize(("batch", "rows"), [(1, None), (5, 2), (4, 4)])
def test_attack_estimate_equals_the_autograd_estimate(threads, shape, hidden, batch, rows):
    # the delta step's hand-written gradient at v: the value bitwise, the gradient to rounding
    threads(1)
    mine = PerSampleMINE(shape, seed=1, index=torch.arange(batch), count=7, lr=1e-3, hidden=hidden, sub_batch=rows)
    u, v = torch.rand(batch, 7, *shape), torch.rand(batch, 7, *shape)
    mine.train(u, v, 3)
    permutation = mine.permutations(1)[0]
    weights = torch.randn(batch)  # any upstream gradient, one per sample
    values = {}
    for name, method in (("autograd", mine.estimate), ("hand-written", mine.attack_estimate)):
        v_grad = v.clone().requires_grad_(True)
        value = method(u, v_grad, permutation)
        (grad,) = torch.autograd.grad((weights * value).sum(), v_grad)
        values[name] = (value.detach(), grad)
    assert torch.equal(values["hand-written"][0], values["autograd"][0])
    torch.testing.assert_close(values["hand-written"][1], values["autograd"][1], rtol=1e-5, atol=1e-7)
    assert values["autograd"][1].abs().amax() > 1e-3  # a gradient that can disagree
    before = [p.detach().clone() for p in mine.network.parameters()]
    mine.attack_estimate(u, v.clone().requires_grad_(True), permutation)
    assert all(torch.equal(a, b) for a, b in zip(before, mine.network.parameters()))  # parameters untouched


def test_training_steps_skip_the_bound_but_write_the_same_gradients():
    mine = _mine(3, (6, 5), 7)
    u, v = torch.rand(3, 7, 6, 5), torch.rand(3, 7, 6, 5)
    permutation = mine.permutations(1)[0]
    network = mine.network
    estimate = network.ascent_gradients(u, v, permutation)
    with_bound = [p.grad.clone() for p in network.parameters()]
    assert network.ascent_gradients(u, v, permutation, bound=False) is None
    assert all(torch.equal(a, p.grad) for a, p in zip(with_bound, network.parameters()))
    assert torch.equal(estimate, network(u, v, permutation).detach())


def test_vector_samples_train_bitwise_in_any_sub_batch(threads):
    threads(2)
    u, v = torch.rand(11, 9, 12), torch.rand(11, 9, 12)
    whole = _mine(11, (12,), 9, sub_batch=11)
    expected = whole.train(u, v, 4)
    permutation = torch.stack([torch.randperm(9) for _ in range(11)])
    expected_grad = _attack_gradient(whole, u, v, permutation)
    for rows in (1, 2, 8):
        parted = _mine(11, (12,), 9, sub_batch=rows)
        assert torch.equal(parted.train(u, v, 4), expected)
        assert torch.equal(_attack_gradient(parted, u, v, permutation), expected_grad)


def test_block_adam_equals_torch_fused_adam():
    torch.manual_seed(0)
    shapes = [(3, 10), (3, 16, 5), (3, 7)]
    ours = [torch.randn(shape) for shape in shapes]
    theirs = [torch.nn.Parameter(p.clone()) for p in ours]
    for p in ours:
        p.grad = torch.empty_like(p)
    adam = BlockAdam(ours, 1e-3)
    reference = torch.optim.Adam(theirs, lr=1e-3, fused=True)
    for _ in range(4):
        for a, b in zip(ours, theirs):
            a.grad.copy_(torch.randn_like(a))
            b.grad = a.grad.clone()
        adam.step()
        reference.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b.detach())


def test_fixed_samples_inputs_are_reused_until_the_samples_change(threads):
    threads(1)
    mine = _mine(4, (6, 5), 7, sub_batch=2)
    u, v = torch.rand(4, 7, 6, 5), torch.rand(4, 7, 6, 5)
    mine.train(u, v, 1)
    first = mine._inputs.inputs
    mine.train(u, v, 1)
    assert mine._inputs.inputs is first  # same data: reused
    u.mul_(0.5)  # in place: a new version
    mine.train(u, v, 1)
    second = mine._inputs.inputs
    assert second is not first
    # the buffers hold both branches' inputs: u's taps and the last v's
    assert torch.equal(second[1], mine.network.branch_inputs(u[2:4], v[2:4]))


def test_sub_batch_rows_follow_the_budget_and_the_threads(threads):
    threads(1)
    network = _mine(4, (28, 28), 16).network
    assert sub_batch_rows(network, 16) == 2  # ~4.5 MB per row: 2 rows in 12 MiB
    assert sub_batch_rows(network, 16, budget=100 * 2**20) == 24  # 23 rows, rounded up to a multiple of 2
    assert sub_batch_rows(network, 16, budget=2**20) == 2  # at least one row, rounded up
    threads(2)
    assert sub_batch_rows(network, 16) == 8  # fewer hand-overs of Python's lock between the workers
    with pytest.raises(ValueError, match="sub_batch must be >= 1"):
        _mine(4, (6, 5), 7, sub_batch=0)


def test_workspace_reuses_one_buffer_per_name():
    work = Workspace()
    like = torch.zeros(1)
    big = work.get("a", (4, 5), like)
    small = work.get("a", (2, 3), like)
    assert small.data_ptr() == big.data_ptr() and small.shape == (2, 3)
    assert work.get("a", (5, 5), like).numel() == 25  # grows when asked for more
    assert work.get("b", (2,), like).data_ptr() != work.get("a", (2,), like).data_ptr()


def test_workspace_keeps_views_per_owners_and_drops_them_when_a_buffer_grows():
    work = Workspace()
    like = torch.zeros(1)
    work.get("a", (2, 3), like)  # allocating a buffer drops kept views too: allocate it first
    owners = (object(), like)
    work.start(owners)
    first = work.kept("view", lambda: work.get("a", (2, 3), like).t())
    work.start(owners)  # the same objects: the view is reused
    assert work.kept("view", lambda: like) is first
    work.start((object(), like))  # other owners: made again
    assert work.kept("view", lambda: like) is like
    work.start(owners)
    kept = work.kept("view", lambda: work.get("a", (2, 3), like).t())
    work.get("a", (4, 4), like)  # the buffer behind it grows: nothing kept survives
    work.start(owners)
    assert work.kept("view", lambda: like) is like and kept is not like


@pytest.mark.parametrize("shape, hidden", [((6, 5), None), ((6, 5), 12), ((9,), None)])
def test_steps_sharing_a_workspace_across_sub_batches_equal_fresh_workspaces(shape, hidden):
    # one workspace serves every sub-batch of a worker, training and the delta step interleaved;
    # its kept views must follow the sub-batch (rows, inputs) of each call
    network = _mine(5, shape, 7, hidden=hidden).network
    u, v = torch.rand(5, 7, *shape), torch.rand(5, 7, *shape)
    permutation = torch.stack([torch.randperm(7) for _ in range(5)])
    blocks = [slice(0, 2), slice(2, 4), slice(4, 5)]
    inputs = {block.start: network.branch_inputs(u[block], v[block]) for block in blocks}

    def run(work_for):
        results = []
        for _ in range(3):
            for block in blocks:
                args = (u[block], v[block], permutation[block], inputs[block.start], block, work_for(block))
                estimate = network.ascent_gradients(*args)
                grads = [p.grad[block].clone() for p in network.parameters()]
                value, sample_grad = network.bound_and_sample_gradient(*args)
                results.append((estimate, grads, value, sample_grad))
        return results

    shared = Workspace()
    for got, expected in zip(run(lambda block: shared), run(lambda block: Workspace())):
        assert torch.equal(got[0], expected[0]) and torch.equal(got[2], expected[2])
        assert torch.equal(got[3], expected[3])
        assert all(torch.equal(a, b) for a, b in zip(got[1], expected[1]))


def test_a_forked_child_does_not_inherit_the_parents_pool(threads):
    # the parent's pool threads do not exist in a fork (a DataLoader worker): the child starts
    # without pools and still trains (with one thread, as DataLoader workers run)
    threads(2)
    u, v = torch.rand(16, 7, 6, 5), torch.rand(16, 7, 6, 5)
    expected = _mine(16, (6, 5), 7, sub_batch=8).train(u, v, 2)  # creates the parent's 2-thread pool
    assert per_sample._POOLS
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pools, got = pool.apply_async(_train_in_child, (u, v)).get(timeout=120)
    assert pools == 0 and torch.equal(got, expected)


def _train_in_child(u: torch.Tensor, v: torch.Tensor) -> tuple[int, torch.Tensor]:
    pools = len(per_sample._POOLS)
    torch.set_num_threads(1)  # libgomp cannot run a team of threads again in a fork of a parent that used one
    return pools, _mine(16, (6, 5), 7, sub_batch=8).train(u, v, 2)

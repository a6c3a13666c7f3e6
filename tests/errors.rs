//! Bad input gives a clear error value naming the op and the shapes or limit, never a panic.

mod common;
use common::*;
use resnet::ops::conv2d::{self, Conv2dShape};
use resnet::ops::{batchnorm, linear, pool};
use resnet::Error;

#[test]
fn shape_mismatch_names_op_and_shapes() {
    let gpu = gpu();
    let sh = Conv2dShape::new(2, 16, 8, 8, 16, 3, 1, 1);
    let x = gpu.zeros(&[2, 8, 8, 8]).unwrap(); // 8 channels, 16 expected
    let w = gpu.zeros(&sh.w_shape()).unwrap();
    let y = gpu.zeros(&sh.y_shape()).unwrap();
    let e = conv2d::forward(&gpu, &sh, &x, &w, None, &y)
        .err()
        .expect("must fail");
    let msg = e.to_string();
    assert!(matches!(e, Error::Shape { .. }), "{msg}");
    assert!(
        msg.contains("conv2d forward")
            && msg.contains("[2, 8, 8, 8]")
            && msg.contains("[2, 16, 8, 8]"),
        "{msg}"
    );

    let xl = gpu.zeros(&[4, 10]).unwrap();
    let wl = gpu.zeros(&[3, 11]).unwrap();
    let b = gpu.zeros(&[3]).unwrap();
    let yl = gpu.zeros(&[4, 3]).unwrap();
    let msg = linear::forward(&gpu, &xl, &wl, &b, &yl)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("linear forward") && msg.contains("[4, 10]") && msg.contains("[3, 11]"),
        "{msg}"
    );

    let x3 = gpu.zeros(&[4, 10, 3]).unwrap();
    let msg = batchnorm::forward_eval(
        &gpu,
        &x3,
        &x3,
        &batchnorm::BnParams {
            affine: &b,
            running: &b,
        },
        Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        msg.contains("batchnorm2d") && msg.contains("[4, 10, 3]"),
        "{msg}"
    );
}

#[test]
fn zero_sized_dimensions_are_errors() {
    let gpu = gpu();
    let e = gpu.zeros(&[0, 3, 32, 32]).err().unwrap();
    assert!(e.to_string().contains("zero-sized dimension"), "{e}");
    let sh = Conv2dShape::new(1, 3, 8, 8, 0, 3, 1, 1);
    let t = gpu.zeros(&[1]).unwrap();
    let e = conv2d::forward(&gpu, &sh, &t, &t, None, &t).err().unwrap();
    assert!(
        e.to_string().contains("conv2d forward") && e.to_string().contains("zero-sized"),
        "{e}"
    );
    let e = conv2d::forward(
        &gpu,
        &Conv2dShape::new(1, 3, 2, 2, 4, 7, 1, 0),
        &t,
        &t,
        None,
        &t,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("larger than padded input"), "{e}");
    let bad_pool = pool::PoolShape {
        n: 1,
        c: 1,
        h: 4,
        w: 4,
        window: 3,
        stride: 0,
        pad: 1,
    };
    let e = pool::maxpool_forward(&gpu, &bad_pool, &t, &t, &t)
        .err()
        .unwrap();
    assert!(e.to_string().contains("maxpool"), "{e}");
}

#[test]
fn buffers_beyond_device_limits_are_errors() {
    let gpu = gpu();
    let max = gpu.limits.max_buffer_size as usize;
    let e = gpu
        .zeros(&[max / 4 + 1])
        .expect_err("must exceed the buffer limit");
    let msg = e.to_string();
    assert!(matches!(e, Error::Limit { .. }), "{msg}");
    assert!(
        msg.contains("max_buffer_size")
            && msg.contains(&max.to_string())
            && msg.contains(&format!("[{}]", max / 4 + 1)),
        "{msg}"
    );
    // a buffer beyond one binding is made (a large model's flat parameters are, and bound a
    // chunk at a time), but a kernel binding it whole is an error naming the limit
    let bind = gpu.limits.max_storage_buffer_binding_size as usize;
    if bind < max {
        let big = gpu.zeros(&[bind / 4 + 1]).expect("below max_buffer_size");
        let e = resnet::ops::elementwise::relu_forward(&gpu, &big, &big)
            .err()
            .expect("must exceed the binding limit");
        let msg = e.to_string();
        assert!(matches!(e, Error::Limit { .. }), "{msg}");
        assert!(
            msg.contains("max_storage_buffer_binding_size")
                && msg.contains(&bind.to_string())
                && msg.contains(&format!("[{}]", bind / 4 + 1)),
            "{msg}"
        );
    }
    // uploading data that does not fill the shape is an error too
    let e = gpu.upload(&[1.0f32; 5], &[2, 3]).err().unwrap();
    assert!(e.to_string().contains("[2, 3]"), "{e}");
}

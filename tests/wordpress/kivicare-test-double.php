<?php
/**
 * Plugin Name: KiviCare TEST DOUBLE (test fixture)
 * Description: A test fixture, not a copy of KiviCare. It stands in for the handful of KiviCare
 *              names the sidecar bridge touches, so the bridge can be tested end to end on a real
 *              WordPress: a tiny appointments table with KiviCare's column names, an appointment
 *              model whose save() recomputes the UTC columns, kcGetDoctorTimezone(), the four
 *              KiviCare roles, and test-only REST routes (namespace `kc-test/v1`, no auth, loopback
 *              only) that book, read and change appointments while firing the same actions and
 *              filters KiviCare fires. Installed as a must-use plugin by
 *              tests/wordpress/test_wordpress_e2e.py only.
 *
 * @package KC_Sidecar_Tests
 */

namespace App\models {

	/**
	 * Test-double appointment model: find(), update(), save(); save() derives the UTC columns from
	 * the local ones in the appointment's zone (the doctor's when empty or 'UTC'), as KiviCare does.
	 */
	final class KCAppointment {

		/** Property name => column. */
		const COLUMNS = array(
			'id'                   => 'id',
			'doctorId'             => 'doctor_id',
			'patientId'            => 'patient_id',
			'clinicId'             => 'clinic_id',
			'status'               => 'status',
			'description'          => 'description',
			'appointmentStartDate' => 'appointment_start_date',
			'appointmentStartTime' => 'appointment_start_time',
			'appointmentEndDate'   => 'appointment_end_date',
			'appointmentEndTime'   => 'appointment_end_time',
			'appointmentStartUtc'  => 'appointment_start_utc',
			'appointmentEndUtc'    => 'appointment_end_utc',
			'appointmentTimezone'  => 'appointment_timezone',
		);

		/** @var array Column => value. */
		private $row;

		private function __construct( array $row ) {
			$this->row = $row;
		}

		public static function table(): string {
			global $wpdb;
			return $wpdb->prefix . 'kc_appointments';
		}

		public static function find( $id ) {
			global $wpdb;
			$row = $wpdb->get_row( $wpdb->prepare( 'SELECT * FROM ' . self::table() . ' WHERE id = %d', $id ), ARRAY_A );
			return $row ? new self( $row ) : null;
		}

		public static function create( array $row ) {
			$model = new self( $row );
			return $model->save();
		}

		public function __get( $property ) {
			return $this->row[ self::COLUMNS[ $property ] ?? $property ] ?? null;
		}

		public function update( array $data ) {
			foreach ( $data as $property => $value ) {
				$this->row[ self::COLUMNS[ $property ] ?? $property ] = $value;
			}
			return $this->save();
		}

		public function save() {
			global $wpdb;
			$zone = (string) ( $this->row['appointment_timezone'] ?? '' );
			if ( '' === $zone || 'UTC' === $zone ) {
				$zone = kcGetDoctorTimezone( (int) $this->row['doctor_id'] );
			}
			$zone = new \DateTimeZone( $zone );
			$utc  = new \DateTimeZone( 'UTC' );
			$this->row['appointment_start_utc'] = ( new \DateTime( $this->row['appointment_start_date'] . ' ' . $this->row['appointment_start_time'], $zone ) )->setTimezone( $utc )->format( 'Y-m-d H:i:s' );
			$this->row['appointment_end_utc']   = ( new \DateTime( $this->row['appointment_end_date'] . ' ' . $this->row['appointment_end_time'], $zone ) )->setTimezone( $utc )->format( 'Y-m-d H:i:s' );
			if ( empty( $this->row['id'] ) ) {
				unset( $this->row['id'] );
				if ( ! $wpdb->insert( self::table(), $this->row ) ) {
					return false;
				}
				$this->row['id'] = $wpdb->insert_id;
				return (int) $wpdb->insert_id;
			}
			return false === $wpdb->update( self::table(), $this->row, array( 'id' => $this->row['id'] ) ) ? false : (int) $this->row['id'];
		}

		public function toArray(): array {
			return $this->row;
		}
	}
}

namespace {

	use App\models\KCAppointment;

	if ( ! defined( 'KIVI_CARE_VERSION' ) ) {
		define( 'KIVI_CARE_VERSION', '4.3.0' ); // What the bridge reports in GET /status.
	}

	/**
	 * Test double of KiviCare's doctor timezone look-up: user-meta `timezone`, else the site's.
	 *
	 * @param int $doctor_id WordPress user id.
	 */
	function kcGetDoctorTimezone( int $doctor_id ): string {
		$tz = get_user_meta( $doctor_id, 'timezone', true );
		return ( $tz && in_array( $tz, timezone_identifiers_list(), true ) ) ? $tz : wp_timezone_string();
	}

	/**
	 * Creates the fixture's table and roles (called by the test's install script).
	 */
	function kc_test_double_install(): void {
		global $wpdb;
		require_once ABSPATH . 'wp-admin/includes/upgrade.php';
		dbDelta(
			'CREATE TABLE ' . KCAppointment::table() . " (
  id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  appointment_start_date date NOT NULL,
  appointment_start_time time NOT NULL,
  appointment_end_date date NOT NULL,
  appointment_end_time time NOT NULL,
  clinic_id bigint(20) unsigned NOT NULL DEFAULT 1,
  doctor_id bigint(20) unsigned NOT NULL,
  patient_id bigint(20) unsigned NOT NULL,
  description text,
  status tinyint(1) NOT NULL DEFAULT 1,
  appointment_start_utc datetime NOT NULL,
  appointment_end_utc datetime NOT NULL,
  appointment_timezone varchar(64) NOT NULL DEFAULT 'UTC',
  PRIMARY KEY  (id)
) {$wpdb->get_charset_collate()};"
		);
		foreach ( array( 'kiviCare_doctor' => 'Doctor', 'kiviCare_patient' => 'Patient', 'kiviCare_receptionist' => 'Receptionist', 'kiviCare_clinic_admin' => 'Clinic admin' ) as $role => $label ) {
			if ( ! get_role( $role ) ) {
				add_role( $role, $label, array( 'read' => true ) );
			}
		}
	}

	/**
	 * An appointment as the fixture's routes show it.
	 *
	 * @param array $row The table row.
	 */
	function kc_test_double_item( array $row ): array {
		return array(
			'id'                 => (string) $row['id'],
			'doctorId'           => (int) $row['doctor_id'],
			'patientId'          => (int) $row['patient_id'],
			'status'             => (int) $row['status'],
			'description'        => $row['description'],
			'local'              => array( $row['appointment_start_date'] . ' ' . $row['appointment_start_time'], $row['appointment_end_date'] . ' ' . $row['appointment_end_time'], $row['appointment_timezone'] ),
			'utc'                => array( $row['appointment_start_utc'], $row['appointment_end_utc'] ),
			'video_consultation' => apply_filters( 'kc_is_video_consultation', false, absint( $row['id'] ) ),
		);
	}

	add_action(
		'rest_api_init',
		static function () {
			$open = '__return_true'; // Test fixture on loopback only.

			// Book like KiviCare: busy blocks from kc_external_busy_slots_single and other appointments refuse (409).
			register_rest_route(
				'kc-test/v1',
				'/book',
				array(
					'methods'             => 'POST',
					'permission_callback' => $open,
					'callback'            => static function ( WP_REST_Request $request ) {
						global $wpdb;
						$doctor = (int) $request['doctor_id'];
						$zone   = new DateTimeZone( kcGetDoctorTimezone( $doctor ) );
						$start  = new DateTimeImmutable( $request['date'] . ' ' . $request['time'], $zone );
						$end    = $start->modify( '+' . (int) $request['minutes'] . ' minutes' );
						foreach ( apply_filters( 'kc_external_busy_slots_single', array(), $doctor, $request['date'] ) as $busy ) {
							if ( $start < new DateTimeImmutable( $busy['end'], $zone ) && $end > new DateTimeImmutable( $busy['start'], $zone ) ) {
								return new WP_REST_Response( array( 'status' => false, 'message' => 'Selected time slot is not available' ), 409 );
							}
						}
						$utc   = new DateTimeZone( 'UTC' );
						$taken = $wpdb->get_var( $wpdb->prepare( 'SELECT id FROM ' . KCAppointment::table() . ' WHERE doctor_id = %d AND status <> 0 AND appointment_start_utc < %s AND appointment_end_utc > %s', $doctor, $end->setTimezone( $utc )->format( 'Y-m-d H:i:s' ), $start->setTimezone( $utc )->format( 'Y-m-d H:i:s' ) ) );
						if ( $taken ) {
							return new WP_REST_Response( array( 'status' => false, 'message' => 'Selected time slot is not available' ), 409 );
						}
						$data = array(
							'doctor_id'              => $doctor,
							'patient_id'             => (int) $request['patient_id'],
							'clinic_id'              => 1,
							'description'            => (string) $request['description'],
							'status'                 => (int) ( $request['status'] ?? 1 ),
							'appointment_start_date' => $start->format( 'Y-m-d' ),
							'appointment_start_time' => $start->format( 'H:i:s' ),
							'appointment_end_date'   => $end->format( 'Y-m-d' ),
							'appointment_end_time'   => $end->format( 'H:i:s' ),
							'appointment_timezone'   => $zone->getName(),
						);
						$id = KCAppointment::create( $data );
						if ( ! $id ) {
							return new WP_REST_Response( array( 'status' => false ), 500 );
						}
						if ( 2 !== $data['status'] ) {
							do_action( 'kc_after_create_appointment', $id, $data, $request );
						}
						return new WP_REST_Response( array( 'status' => true, 'data' => array( 'appointment_id' => $id ) ), 201 );
					},
				)
			);

			// What KiviCare's slot generator would receive from the busy filters.
			register_rest_route(
				'kc-test/v1',
				'/busy',
				array(
					'methods'             => 'GET',
					'permission_callback' => $open,
					'callback'            => static function ( WP_REST_Request $request ) {
						$doctor = (int) $request['doctor_id'];
						return array(
							'single' => apply_filters( 'kc_external_busy_slots_single', array(), $doctor, (string) $request['date'] ),
							'month'  => apply_filters( 'kc_external_busy_slots', array(), $doctor, (string) $request['from'], (string) $request['to'] ),
						);
					},
				)
			);

			// One appointment through the three read filters KiviCare applies (list item, GET /{id}, /{id}/view).
			register_rest_route(
				'kc-test/v1',
				'/appointments/(?P<id>\d+)',
				array(
					'methods'             => 'GET',
					'permission_callback' => $open,
					'callback'            => static function ( WP_REST_Request $request ) {
						$model = KCAppointment::find( (int) $request['id'] );
						if ( ! $model ) {
							return new WP_REST_Response( array( 'status' => false ), 404 );
						}
						$row  = $model->toArray();
						$item = kc_test_double_item( $row );
						return array(
							'list'    => apply_filters( 'kc_appointment_list_item', $item, (object) $row ),
							'data'    => apply_filters( 'kc_appointment_data', $item, $row['id'] ),
							'details' => apply_filters( 'kc_appointment_details_data', $item, (object) $row ),
						);
					},
				)
			);

			// Status change like KiviCare's PUT /appointments/{id}/status.
			register_rest_route(
				'kc-test/v1',
				'/appointments/(?P<id>\d+)/status',
				array(
					'methods'             => 'PUT',
					'permission_callback' => $open,
					'callback'            => static function ( WP_REST_Request $request ) {
						$id     = (int) $request['id'];
						$status = (int) $request['status'];
						$model  = KCAppointment::find( $id );
						if ( ! $model ) {
							return new WP_REST_Response( array( 'status' => false ), 404 );
						}
						$model->update( array( 'status' => $status ) );
						if ( 0 === $status ) {
							do_action( 'kc_appointment_cancelled', $id );
						}
						do_action( 'kc_appointment_status_update', $id, $status, $model );
						return array( 'status' => true, 'data' => array( 'id' => $id, 'status' => $status ) );
					},
				)
			);

			// KiviCare's dashboard sidebar, as its kivicare_sidebar_data filter leaves it.
			register_rest_route(
				'kc-test/v1',
				'/sidebar',
				array(
					'methods'             => 'GET',
					'permission_callback' => $open,
					'callback'            => static function ( WP_REST_Request $request ) {
						return apply_filters( 'kivicare_sidebar_data', array(), (string) $request['role'] );
					},
				)
			);
		}
	);
}

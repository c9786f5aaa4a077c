"""Deterministic demo data for the KiviCare sandbox (``sandbox/kivicare.py``).

Everything here is invented: the clinic, the staff and the patients do not exist,
and every e-mail address uses the reserved ``.test`` top-level domain.

The data is *relative to today* in the site timezone (Europe/Paris by default),
so a demo started on any day shows a few past appointments, some today and a
couple of weeks of upcoming ones. There is no randomness: the same ``today``
always gives the same rows.

Seeded ids (WordPress user ids; doctors and patients are WP users in KiviCare):

=====  =======================  ==========================================
id     who                      notes
=====  =======================  ==========================================
1      the sidecar admin        role ``administrator`` (username/app password
                                come from ``KiviCareSandbox(...)``)
2      Claire Martin            clinic admin of clinic 1 (``clairemartin``)
3      Dr Anna Schmidt          doctor, user-meta timezone null -> site tz
4      Dr Marc Dubois           doctor, timezone null -> site tz
5      Louis Bernard            patient
6      Emma Petit               patient
7      Hugo Moreau              patient
8      Dr Sofia Rossi           doctor, timezone ``America/New_York``
9      Lea Garnier              patient
=====  =======================  ==========================================

kc_services (``serviceId`` in lists; ``service_id`` in details):

* 1 "General Consultation"  30 min, 50 EUR
* 2 "Video Consultation"    20 min, 40 EUR, ``telemed_service: yes`` (cannot be
  booked over REST while no Telemed / Google Meet add-on is active)
* 3 "Online Follow-up"      20 min, 35 EUR, telemed ``no`` (what clinics on the
  free plugin use for video calls)
* 4 "Extended Consultation" 45 min, 80 EUR

Doctor-service mappings (the ids ``POST /appointments`` takes in ``serviceId``):

=======  ========  =========================
mapping  doctor    kc_service (duration)
=======  ========  =========================
1        Anna 3    1 General (30)
2        Anna 3    2 Video, telemed (20)
3        Anna 3    3 Online Follow-up (20)
4        Marc 4    1 General (30)
5        Marc 4    3 Online Follow-up (20)
6        Anna 3    4 Extended (45)
7        Marc 4    4 Extended (45)
8        Sofia 8   1 General (30)
9        Sofia 8   3 Online Follow-up (20)
10       Sofia 8   4 Extended (45)
=======  ========  =========================

The layout is chosen so that the real ``PUT /appointments/{id}`` duration bug
(kc_services ids looked up as mapping ids, API.md 2.10) turns every 45-minute
appointment into a 30-minute one (the doctors' session ``time_slot``).

Sessions: every doctor works Mon-Fri 09:00-17:00 in their own timezone,
``time_slot`` 30.

Appointments: 20 rows from 3 business days ago to 14 business days ahead,
statuses mostly 1 (Booked), three 2 (Pending), one 4 (Check-In, today, with an
encounter and an unpaid bill) and one 0 (Cancelled).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from sandbox.kivicare import KiviCareSandbox

#: Deterministic login passwords and application passwords of the seeded
#: (non-sidecar) users, by username. WordPress strips the spaces of application
#: passwords, so "Anna 0003 demo pass word only" and "Anna0003demopasswordonly"
#: are the same credential.
SEED_USERS = {
    # username: (user id, login password, application password)
    "clairemartin": (2, "demo-password-clairemartin", "clai 0002 demo pass word only"),
    "Anna": (3, "demo-password-Anna", "Anna 0003 demo pass word only"),
    "Marc": (4, "demo-password-Marc", "Marc 0004 demo pass word only"),
    "Louis": (5, "demo-password-Louis", "Loui 0005 demo pass word only"),
    "Emma": (6, "demo-password-Emma", "Emma 0006 demo pass word only"),
    "Hugo": (7, "demo-password-Hugo", "Hugo 0007 demo pass word only"),
    "Sofia": (8, "demo-password-Sofia", "Sofi 0008 demo pass word only"),
    "Lea": (9, "demo-password-Lea", "Leaa 0009 demo pass word only"),
}

CLINIC_ID = 1
DOCTORS = {"anna": 3, "marc": 4, "sofia": 8}
PATIENTS = {"louis": 5, "emma": 6, "hugo": 7, "lea": 9}

#: mapping id -> (doctor id, kc_service id, duration in minutes)
MAPPINGS = {
    1: (3, 1, 30),
    2: (3, 2, 20),
    3: (3, 3, 20),
    4: (4, 1, 30),
    5: (4, 3, 20),
    6: (3, 4, 45),
    7: (4, 4, 45),
    8: (8, 1, 30),
    9: (8, 3, 20),
    10: (8, 4, 45),
}

# (business-day offset from today, doctor, local "HH:MM" in the doctor's tz,
#  patient, mapping id, status, description)
_APPOINTMENTS = [
    (-3, 3, "09:00", 5, 1, 1, "Annual check-up"),
    (-3, 4, "14:00", 7, 7, 1, "Skin rash assessment"),
    (-2, 8, "10:00", 6, 8, 1, "Travel vaccination advice"),
    (-1, 3, "11:00", 6, 3, 1, "Video call: blood test results"),
    (-1, 4, "09:30", 5, 4, 0, "Cancelled by the patient"),
    (0, 3, "09:00", 7, 1, 4, "Persistent cough"),
    (0, 4, "15:00", 9, 4, 1, "Mole check"),
    (0, 8, "13:00", 5, 9, 1, "Video follow-up from New York"),
    (1, 3, "10:00", 5, 6, 1, "Extended consultation: diabetes review"),
    (1, 4, "11:00", 6, 4, 2, "Eczema follow-up (pending)"),
    (2, 3, "14:30", 9, 1, 1, "Prescription renewal"),
    (2, 8, "09:30", 7, 8, 1, "Sports injury check"),
    (3, 4, "16:00", 7, 5, 1, "Video call: acne treatment review"),
    (4, 3, "09:30", 6, 1, 2, "Vaccination (pending payment)"),
    (5, 3, "15:00", 7, 3, 1, "Video call: back pain follow-up"),
    (6, 4, "10:00", 5, 7, 1, "Dermatology review"),
    (8, 8, "11:00", 9, 10, 1, "Annual physical"),
    (10, 3, "09:00", 5, 1, 1, "Blood pressure check"),
    (12, 4, "14:00", 6, 4, 2, "Allergy consultation (pending)"),
    (14, 3, "11:30", 7, 1, 1, "Follow-up: cough"),
]


def business_day(today: date, offset: int) -> date:
    """The ``offset``-th weekday from ``today`` (0 = today, or the next weekday
    if today is a weekend day; negative offsets count backwards)."""
    day = today
    if offset >= 0:
        while day.weekday() >= 5:
            day += timedelta(days=1)
        remaining = offset
        while remaining:
            day += timedelta(days=1)
            if day.weekday() < 5:
                remaining -= 1
    else:
        remaining = -offset
        while remaining:
            day -= timedelta(days=1)
            if day.weekday() < 5:
                remaining -= 1
    return day


def seed(sb: "KiviCareSandbox", today: date) -> None:
    """Fill an empty sandbox with the demo clinic. ``today`` is the site-local date."""
    created = datetime.combine(today - timedelta(days=10), time(9, 0))
    sb._seed_static_data([(8, "service_type", "General Medicine", "general_medicine"),
                          (9, "service_type", "Telemedicine", "telemedicine")])
    clinic_admin = sb._add_user(
        username="clairemartin", email="claire.martin@riverside-clinic.test",
        first_name="Claire", last_name="Martin", role="kiviCare_clinic_admin",
        password=SEED_USERS["clairemartin"][1], app_password=SEED_USERS["clairemartin"][2],
        meta={"mobile_number": "+33600000001", "gender": "female"},
    )
    sb._add_clinic(
        name="Riverside Family Clinic", email="contact@riverside-clinic.test",
        contact="+33142000000", address="12 Rue de la Paix", city="Paris",
        postal_code="75002", country="France",
        specialties=[{"id": 2, "label": "Family Medicine"}], admin_id=clinic_admin,
        currency_prefix="\u20ac", currency_postfix="",
    )
    doctors = [
        ("Anna", "Schmidt", "anna.schmidt@riverside-clinic.test", "+33600000011", "female",
         None, [{"id": "2", "label": "Family Medicine"}]),
        ("Marc", "Dubois", "marc.dubois@riverside-clinic.test", "+33600000012", "male",
         None, [{"id": "1", "label": "Dermatology"}]),
    ]
    for first, last, email, phone, gender, tz, specialties in doctors:
        sb._add_user(
            username=first, email=email, first_name=first, last_name=last,
            role="kiviCare_doctor", password=SEED_USERS[first][1],
            app_password=SEED_USERS[first][2], timezone=tz, clinics=[CLINIC_ID],
            meta={"mobile_number": phone, "gender": gender, "dob": "1980-04-12",
                  "address": "3 Avenue de l'Opera", "city": "Paris", "country": "France",
                  "postal_code": "75001", "specialties": specialties,
                  "qualifications": [{"degree": "MD", "university": "Universite Paris Cite",
                                      "year": 2006}],
                  "experience": 15, "description": f"Dr. {first} {last}"},
        )
    patients = [
        ("Louis", "Bernard", "louis.bernard@patients.test", "+33610000101", "male", "A+"),
        ("Emma", "Petit", "emma.petit@patients.test", "+33610000102", "female", "O-"),
        ("Hugo", "Moreau", "hugo.moreau@patients.test", "+33610000103", "male", "B+"),
    ]
    for first, last, email, phone, gender, blood in patients:
        sb._add_user(
            username=first, email=email, first_name=first, last_name=last,
            role="kiviCare_patient", password=SEED_USERS[first][1],
            app_password=SEED_USERS[first][2], clinics=[CLINIC_ID],
            meta={"mobile_number": phone, "gender": gender, "dob": "1985-01-15",
                  "blood_group": blood, "address": "10 Rue Oberkampf", "city": "Paris",
                  "country": "France", "postal_code": "75011"},
        )
    sb._add_user(
        username="Sofia", email="sofia.rossi@riverside-clinic.test", first_name="Sofia",
        last_name="Rossi", role="kiviCare_doctor", password=SEED_USERS["Sofia"][1],
        app_password=SEED_USERS["Sofia"][2], timezone="America/New_York",
        clinics=[CLINIC_ID],
        meta={"mobile_number": "+12125550108", "gender": "female", "dob": "1984-06-02",
              "address": "200 Park Avenue", "city": "New York", "country": "United States",
              "postal_code": "10166",
              "specialties": [{"id": "2", "label": "Family Medicine"}],
              "qualifications": [{"degree": "MD", "university": "Columbia University",
                                  "year": 2010}],
              "experience": 12, "description": "Dr. Sofia Rossi (remote consultations)"},
    )
    sb._add_user(
        username="Lea", email="lea.garnier@patients.test", first_name="Lea",
        last_name="Garnier", role="kiviCare_patient", password=SEED_USERS["Lea"][1],
        app_password=SEED_USERS["Lea"][2], clinics=[CLINIC_ID],
        meta={"mobile_number": "+33610000104", "gender": "female", "dob": "1992-09-09",
              "blood_group": "AB+", "address": "14 Rue Oberkampf", "city": "Paris",
              "country": "France", "postal_code": "75011"},
    )

    services = [
        (1, "General Consultation", 8, 50, 30, "no"),
        (2, "Video Consultation", 9, 40, 20, "yes"),
        (3, "Online Follow-up", 9, 35, 20, "no"),
        (4, "Extended Consultation", 8, 80, 45, "no"),
    ]
    prices = {}
    for sid, name, category, price, duration, telemed in services:
        sb._add_service(name=name, category_id=category, price=price, duration=duration,
                        telemed=telemed)
        prices[sid] = (price, telemed)
    for mapping_id in sorted(MAPPINGS):
        doctor_id, service_id, duration = MAPPINGS[mapping_id]
        price, telemed = prices[service_id]
        sb._add_mapping(service_id=service_id, doctor_id=doctor_id, clinic_id=CLINIC_ID,
                        charges=price, duration=duration, telemed=telemed)

    for doctor_id in (3, 4, 8):
        for day in ("mon", "tue", "wed", "thu", "fri"):
            sb._add_session(doctor_id=doctor_id, clinic_id=CLINIC_ID, day=day,
                            start="09:00:00", end="17:00:00", time_slot=30)

    for index, (offset, doctor_id, hhmm, patient_id, mapping_id, status, description) in \
            enumerate(_APPOINTMENTS):
        day = business_day(today, offset)
        hours, minutes = (int(part) for part in hhmm.split(":"))
        sb._insert_appointment(
            doctor_id=doctor_id, patient_id=patient_id, clinic_id=CLINIC_ID,
            local_start=datetime.combine(day, time(hours, minutes)),
            tz_name=sb._doctor_tz(doctor_id), mapping_ids=[mapping_id], status=status,
            description=description,
            created_at=(created + timedelta(minutes=7 * index)).strftime("%Y-%m-%d %H:%M:%S"),
        )
